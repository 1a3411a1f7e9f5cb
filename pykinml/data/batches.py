"""Training batches: a ragged set of structures (any sizes and compositions) with their inputs and targets."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from pykinml.aev.jacobian import AEVJacobian
from pykinml.aev.neighbors import Structures


@dataclass
class Batch:
    """B structures with N atoms in all; ``owner[a]`` is the structure (0..B−1) of atom ``a``.

    Inputs come either from the AEV cache (``aev``, and ``jacobian`` for forces) or, when forces are
    taken by autograd through the AEV, as packed ``structures`` whose AEVs the model computes itself.
    """

    rows: np.ndarray  # (B,) positions in the selection
    ids: np.ndarray  # (B,) database structure ids
    species: Tensor  # (N,) element indices
    owner: Tensor  # (N,)
    natoms: Tensor  # (B,)
    energies: Tensor  # (T, B) float64 targets, eV (NaN where absent)
    energy_mask: Tensor  # (T, B) bool
    forces: Tensor | None  # (T, N, 3) targets, eV/Å
    force_mask: Tensor | None  # (T, N) bool, per atom
    aev: Tensor | None = None  # (N, D)
    stress: Tensor | None = None  # (T, B, 3, 3) targets, eV/Å³
    stress_mask: Tensor | None = None  # (T, B) bool
    cells: Tensor | None = None  # (B, 3, 3) Å, rows are cell vectors (zeros without a cell); with stress targets
    jacobian: AEVJacobian | None = None
    structures: Structures | None = None

    def __len__(self) -> int:
        return int(self.natoms.numel())

    def to(self, device: torch.device | str) -> Batch:
        def move(value):
            return None if value is None else value.to(device)

        return replace(
            self,
            species=self.species.to(device), owner=self.owner.to(device), natoms=self.natoms.to(device),
            energies=self.energies.to(device), energy_mask=self.energy_mask.to(device),
            forces=move(self.forces), force_mask=move(self.force_mask), aev=move(self.aev),
            stress=move(self.stress), stress_mask=move(self.stress_mask), cells=move(self.cells),
            jacobian=move(self.jacobian),
            structures=None if self.structures is None else _structures_to(self.structures, device),
        )


def _structures_to(structures: Structures, device) -> Structures:
    return replace(structures, **{
        name: getattr(structures, name).to(device)
        for name in ("species", "positions", "offsets", "cells", "pbc")
    })


def owner_of(offsets: Tensor) -> Tensor:
    """Structure index of every atom from the (B + 1,) atom offsets."""
    return torch.repeat_interleave(torch.arange(offsets.numel() - 1, device=offsets.device), torch.diff(offsets))

