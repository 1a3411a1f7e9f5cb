"""Energy, force and stress errors per model output, accumulated with torchmetrics and reported in several units.

Errors are accumulated in eV, eV/atom, eV/Å and eV/Å³; MAE and RMSE scale linearly, so kcal/mol, meV/atom
and GPa are exact conversions at reporting time (units come from :mod:`pykinml.units`).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

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


def _pair() -> nn.ModuleDict:
    return nn.ModuleDict({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)})


class ErrorMetrics(nn.Module):
    """MAE and RMSE of energies (per structure and per atom), force and stress components, for each output name."""

    def __init__(self, outputs: list[str]):
        super().__init__()
        self.outputs = list(outputs)
        self.errors = nn.ModuleDict(
            {name: nn.ModuleDict({"energy": _pair(), "atom": _pair(), "force": _pair(), "stress": _pair()})
             for name in self.outputs}
        )

    def update(self, output: int, energy: Tensor, target: Tensor, natoms: Tensor, mask: Tensor,
               forces: Tensor | None = None, target_forces: Tensor | None = None, force_mask: Tensor | None = None,
               stress: Tensor | None = None, target_stress: Tensor | None = None, stress_mask: Tensor | None = None) -> None:
        groups = self.errors[self.outputs[output]]
        if bool(mask.any()):
            e, t, n = energy[mask].detach(), target[mask].detach(), natoms[mask]
            for metric in groups["energy"].values():
                metric.update(e, t)
            for metric in groups["atom"].values():
                metric.update(e / n, t / n)
        if forces is not None and bool(force_mask.any()):
            f, g = forces[force_mask].detach().flatten(), target_forces[force_mask].detach().flatten()
            for metric in groups["force"].values():
                metric.update(f, g)
        if stress is not None and bool(stress_mask.any()):
            p, q = stress[stress_mask].detach().flatten(), target_stress[stress_mask].detach().flatten()
            for metric in groups["stress"].values():
                metric.update(p, q)

    def _accumulators(self) -> list[tuple[str, str, str, nn.Module]]:
        return [(name, group, kind, metric) for name, groups in self.errors.items()
                for group, pair in groups.items() for kind, metric in pair.items()]

    def compute(self) -> dict[str, float]:
        """``{'<output>/<metric>_<unit>': value}`` for every accumulator that saw data on any process.

        Under DDP each accumulator's compute gathers its state from every rank, so every rank must compute
        the same ones: which saw data is decided from update counts summed over all ranks (a rank whose
        shard held no structure with some label still takes part, contributing nothing).
        """
        accumulators = self._accumulators()
        counts = torch.tensor([metric.update_count for *_, metric in accumulators], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = accumulators[0][3].device if dist.get_backend() != "gloo" else torch.device("cpu")
            counts = counts.to(device)
            dist.all_reduce(counts)
        out: dict[str, float] = {}
        values: dict[str, dict[str, float]] = {name: {} for name in self.outputs}
        with warnings.catch_warnings():  # a rank without updates of its own: torchmetrics warns, and syncs all the same
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
            for (name, group, kind, metric), count in zip(accumulators, counts.tolist()):
                if count:
                    values[name][f"{group}_{kind}"] = float(metric.compute())
        for name in self.outputs:
            for report, (source, factor) in REPORTS.items():
                if source in values[name]:
                    out[f"{name}/{report}"] = values[name][source] * factor
        return out

    def reset(self) -> None:
        for *_, metric in self._accumulators():
            metric.reset()
