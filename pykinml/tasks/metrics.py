"""Energy, force and stress errors per model output, accumulated with torchmetrics and reported in several units.

Errors are accumulated in eV, eV/atom, eV/Å and eV/Å³; MAE and RMSE scale linearly, so kcal/mol, meV/atom
and GPa are exact conversions at reporting time (units come from :mod:`pykinml.units`).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from pykinml.tasks.losses import row_mask
from pykinml.units import EV_A3_GPA, KCAL_MOL_EV

#: metric suffix -> (accumulator, factor from eV-based units)
REPORTS = {
    "energy_mae_ev": ("energy_mae", 1.0),
    "energy_rmse_ev": ("energy_rmse", 1.0),
    "energy_mae_kcal_mol": ("energy_mae", 1.0 / KCAL_MOL_EV),
    "energy_rmse_kcal_mol": ("energy_rmse", 1.0 / KCAL_MOL_EV),
    "energy_mae_mev_atom": ("atom_mae", 1000.0),
    "energy_rmse_mev_atom": ("atom_rmse", 1000.0),
    "force_mae_ev_a": ("force_mae", 1.0),
    "force_rmse_ev_a": ("force_rmse", 1.0),
    "force_mae_kcal_mol_a": ("force_mae", 1.0 / KCAL_MOL_EV),
    "force_rmse_kcal_mol_a": ("force_rmse", 1.0 / KCAL_MOL_EV),
    "stress_mae_gpa": ("stress_mae", EV_A3_GPA),
    "stress_rmse_gpa": ("stress_rmse", EV_A3_GPA),
}


GROUPS = ("energy", "atom", "force", "stress")


class ErrorSums(Metric):
    """Σ|error|, Σerror² and the number of errors of each group (rows of :data:`GROUPS`), in float64, summed
    over batches and, at compute, over processes: MAE and RMSE of every group from one state and one update
    a batch (a torchmetrics MAE and RMSE per group cost eight updates a batch)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sums", default=torch.zeros(len(GROUPS), 3, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, sums: Tensor) -> None:
        self.sums += sums

    def compute(self) -> Tensor:
        return self.sums


def _error_sums(prediction: Tensor, target: Tensor, mask: Tensor, scale: Tensor | None = None) -> Tensor:
    """(Σ|e|, Σe², count) of e = (p − t) / scale over the rows where ``mask`` holds (all components of those
    rows), by torch operations."""
    error = prediction.detach().double() - target.detach().double()
    error = torch.where(row_mask(mask, prediction), error if scale is None else error / row_mask(scale, error), 0.0)
    count = mask.sum() * math.prod(prediction.shape[mask.dim():])
    return torch.stack([error.abs().sum(), (error * error).sum(), count.double()])


_NO_SCALE = np.empty(0)


def _kernel_error_sums(groups: list[tuple[Tensor, Tensor, Tensor, Tensor | None] | None]) -> Tensor:
    """The (groups, 3) sums of :func:`_error_sums` (zeros for a group that is None) by the numba loop, on CPU."""
    kernel = _metric_kernels().error_sums
    sums = np.zeros((len(groups), 3))
    for row, group in zip(sums, groups):
        if group is not None:
            values, targets, mask, scale = group
            shape = (mask.shape[0], math.prod(values.shape[1:]))  # (rows, components); also for no rows
            shaped = [t.detach().reshape(shape).numpy() for t in (values, targets)]
            kernel(*shaped, mask.numpy(), _NO_SCALE if scale is None else scale.detach().numpy(), row)
    return torch.from_numpy(sums)


@functools.cache
def _metric_kernels():
    """Compiled on first use (each dtype once, then from numba's disk cache)."""
    from pykinml.tasks import metric_kernels

    return metric_kernels


class ErrorMetrics(nn.Module):
    """MAE and RMSE of energies (per structure and per atom), force and stress components, for each output name.
    ``kernels``: sum the errors with the numba loop (default on CPU) or with torch operations."""

    def __init__(self, outputs: list[str], kernels: bool | None = None):
        super().__init__()
        self.outputs = list(outputs)
        self.errors = nn.ModuleDict({name: ErrorSums() for name in self.outputs})
        self.kernels = kernels

    def update(self, output: int, energy: Tensor, target: Tensor, natoms: Tensor, mask: Tensor,
               forces: Tensor | None = None, target_forces: Tensor | None = None, force_mask: Tensor | None = None,
               stress: Tensor | None = None, target_stress: Tensor | None = None, stress_mask: Tensor | None = None) -> None:
        groups = [(energy, target, mask, None), (energy, target, mask, natoms),
                  None if forces is None else (forces, target_forces, force_mask, None),
                  None if stress is None else (stress, target_stress, stress_mask, None)]
        kernels = energy.device.type == "cpu" if self.kernels is None else self.kernels
        if kernels:
            sums = _kernel_error_sums(groups).to(energy.device)
        else:
            sums = torch.stack([energy.new_zeros(3, dtype=torch.float64) if group is None else _error_sums(*group)
                                for group in groups])
        self.errors[self.outputs[output]].update(sums)

    def compute(self) -> dict[str, float]:
        """``{'<output>/<metric>_<unit>': value}`` for every group with errors on any process (a collective
        under DDP: every rank computes every output, whether or not its own share held that label)."""
        out: dict[str, float] = {}
        with warnings.catch_warnings():  # a rank without updates of its own: torchmetrics warns, and syncs all the same
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
            for name in self.outputs:
                values: dict[str, float] = {}
                for group, (absolute, squared, count) in zip(GROUPS, self.errors[name].compute().tolist()):
                    if count:
                        values[f"{group}_mae"], values[f"{group}_rmse"] = absolute / count, math.sqrt(squared / count)
                for report, (source, factor) in REPORTS.items():
                    if source in values:
                        out[f"{name}/{report}"] = values[source] * factor
        return out

    def reset(self) -> None:
        for metric in self.errors.values():
            metric.reset()
