"""A trained potential in one module: atomic numbers and positions in, energies, forces and stress out.

It bundles the AEV constants, the chained networks and the self atomic energies, so prediction needs no
database, cache or Jacobian: forces are −∂E/∂x and stress (1/V)·∂E/∂ε by autograd through the AEV. The
same module runs eagerly for ``pykinml-predict`` and the ASE calculator and is what ``pykinml-export``
compiles, so every way of running a model computes the same numbers.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from pykinml.aev.compute import compute
from pykinml.aev.neighbors import Structures
from pykinml.aev.params import AEVParams
from pykinml.nn.potential import ChainedPotential


class StandalonePotential(nn.Module):
    """Energies (T, B) in eV (float64, SAEs included), forces (T, N, 3) in eV/Å and stress (T, B, 3, 3) in eV/Å³.

    T counts the model's targets (one per level for multi-fidelity, ``high-low`` for delta, one for single
    fidelity); atoms are given by atomic number and unknown elements must be rejected before the call.
    """

    def __init__(self, params: AEVParams, potential: ChainedPotential):
        super().__init__()
        self.params = params
        self.potential = potential
        lookup = torch.full((max(params.atomic_numbers) + 1,), -1, dtype=torch.int64)
        lookup[list(params.atomic_numbers)] = torch.arange(params.n_elements)
        self.register_buffer("lookup", lookup)

    def predict_batch(
        self,
        numbers: Tensor,
        positions: Tensor,
        offsets: Tensor,
        cells: Tensor,
        pbc: Tensor,
        forces: bool = True,
        stress: bool = False,
    ) -> dict[str, Tensor]:
        """Predictions for B packed structures: atoms ``offsets[k]:offsets[k+1]`` (N total) form structure k."""
        n_structures = offsets.numel() - 1
        species = self.lookup[numbers]
        counts = offsets[1:] - offsets[:-1]
        owner = torch.repeat_interleave(torch.arange(n_structures, device=offsets.device), counts)
        positions = positions.to(self.potential.sae.device, self._dtype())
        cells = cells.to(positions)
        inputs = []
        if forces:
            positions = positions.detach().requires_grad_(True)
            inputs.append(positions)
        strained_positions, strained_cells = positions, cells
        if stress:
            strain = torch.zeros((n_structures, 3, 3), dtype=positions.dtype, device=positions.device, requires_grad=True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            strained_positions = positions + torch.einsum("nc,ncd->nd", positions, symmetric[owner])
            strained_cells = cells + torch.bmm(cells, symmetric)
            inputs.append(strain)
        structures = Structures(species, strained_positions, offsets, strained_cells, pbc)
        with torch.set_grad_enabled(bool(inputs) or torch.is_grad_enabled()):
            aev, _ = compute(self.params, structures)
            residual = self.potential(aev, species, owner, n_structures)
        out = {"energy": residual.detach().double() + self.potential.sae_energies(species, owner, n_structures)}
        if not inputs:
            return out
        level_forces, level_stress = [], []
        for level in range(residual.shape[0]):
            grads = torch.autograd.grad(residual[level].sum(), inputs, retain_graph=level + 1 < residual.shape[0])
            if forces:
                level_forces.append(-grads[0].detach())
            if stress:
                volumes = torch.linalg.det(cells).abs()
                level_stress.append(grads[-1].detach() / volumes[:, None, None])
        if forces:
            out["forces"] = torch.stack(level_forces)
        if stress:
            out["stress"] = torch.stack(level_stress)
        return out

    def forward(self, numbers: Tensor, positions: Tensor, cell: Optional[Tensor] = None, pbc: Optional[Tensor] = None) -> dict[str, Tensor]:  # noqa: UP045, UP007 - TorchScript spells optionals this way
        """One structure: ``energy`` (T,), ``forces`` (T, N, 3) and, for a periodic cell, ``stress`` (T, 3, 3)."""
        cells = torch.zeros((1, 3, 3), dtype=positions.dtype, device=positions.device) if cell is None else cell.reshape(1, 3, 3)
        periodic = torch.zeros((1, 3), dtype=torch.bool, device=positions.device) if pbc is None else pbc.reshape(1, 3).to(torch.bool)
        offsets = torch.tensor([0, numbers.numel()], dtype=torch.int64, device=numbers.device)
        out = self.predict_batch(numbers, positions, offsets, cells, periodic, True, bool(periodic.any()))
        return {name: value.squeeze(1) if name != "forces" else value for name, value in out.items()}

    def _dtype(self) -> torch.dtype:
        return next(self.potential.parameters()).dtype
