"""Loss terms and how they are weighted: fixed ((1 − w_f) L_E + w_f L_F + w_s L_S) or learnable uncertainty weights.

Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018): L = Σ_t exp(−s_t) L_t + s_t, with one s_t per
task (energy, forces and stress of every model output), learned with the network from s_t = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pykinml.errors import PykinmlError

WEIGHTINGS = ("uncertainty", "fixed")


def row_mask(mask: Tensor, values: Tensor) -> Tensor:
    """``mask`` (one flag per row) shaped to broadcast over ``values``' rows (per-atom force rows, 3×3 stress)."""
    return mask.reshape(mask.shape + (1,) * (values.dim() - mask.dim()))


def squared_error(prediction: Tensor, target: Tensor, mask: Tensor, scale: Tensor | None = None) -> Tensor | None:
    """Mean squared error over the rows where ``mask`` holds (``None`` if none does); rows divided by ``scale``."""
    count = int(mask.sum())
    if count == 0:
        return None
    rows = row_mask(mask, prediction)
    diff = prediction - target
    if scale is not None:
        diff = diff / scale.reshape(rows.shape)
    diff = torch.where(rows, diff, 0.0)  # masking by selection would gather rows forward and scatter them back
    return (diff * diff).sum() / (count * (diff.numel() // max(1, mask.numel())))


class TaskWeights(nn.Module):
    """Combine the loss terms of T outputs (energy, and forces and stress when trained on) into one number."""

    def __init__(self, n_outputs: int, forces: bool, weighting: str = "uncertainty", force_weight: float = 0.5,
                 stress: bool = False, stress_weight: float = 0.1):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise PykinmlError(f"unknown loss.weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")
        if not 0.0 <= force_weight <= 1.0:
            raise PykinmlError(f"loss.force_weight must lie in [0, 1], got {force_weight}")
        if stress_weight < 0.0:
            raise PykinmlError(f"loss.stress_weight must not be negative, got {stress_weight}")
        self.weighting, self.forces, self.force_weight = weighting, forces, float(force_weight)
        self.kinds = ["energy"] + (["forces"] if forces else []) + (["stress"] if stress else [])
        self.fixed = {"energy": 1.0 - self.force_weight if forces else 1.0, "forces": self.force_weight,
                      "stress": float(stress_weight)}
        n_tasks = n_outputs * len(self.kinds)
        self.log_variance = nn.Parameter(torch.zeros(n_tasks)) if weighting == "uncertainty" else None

    def task_index(self, output: int, kind: str) -> int:
        return output * len(self.kinds) + self.kinds.index(kind)

    def forward(self, terms: dict[tuple[int, str], Tensor | None]) -> Tensor:
        """``terms[(output, 'energy'|'forces'|'stress')]``: a loss or ``None`` (no labels in this batch)."""
        total = None
        for (output, kind), value in terms.items():
            if self.log_variance is not None:
                s = self.log_variance[self.task_index(output, kind)]
                part = 0.0 * s if value is None else torch.exp(-s) * value + s  # 0·s keeps s in the graph (DDP)
            else:
                if value is None:
                    continue
                part = self.fixed[kind] * value
            total = part if total is None else total + part
        if total is None:
            raise PykinmlError("a batch without any label to train on")
        return total
