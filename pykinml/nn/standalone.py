"""A trained potential in one module: atomic numbers and positions in, energies, forces and stress out.

It bundles the AEV constants, the chained networks and the self atomic energies, so prediction needs no
database, cache or Jacobian: forces are −∂E/∂x and stress (1/V)·∂E/∂ε by autograd through the AEV. The
same module runs eagerly for ``pykinml-predict`` and the ASE calculator and is what ``pykinml-export``
compiles with ``torch.jit.script``, so every way of running a model computes the same numbers.
"""

# No ``from __future__ import annotations`` in this module: TorchScript takes the attribute annotations of
# StandalonePotential for types, and cannot resolve them as strings.

import torch
from torch import Tensor, nn

from pykinml.aev.compute import aev_of_structures
from pykinml.aev.params import AEVConstants, AEVParams
from pykinml.aev.strain import apply_strain, stress_from_strain_gradient
from pykinml.nn.potential import ChainedPotential


class StandalonePotential(nn.Module):
    """Energies (T, B) in eV (float64, SAEs included), forces (T, N, 3) in eV/Å and stress (T, B, 3, 3) in eV/Å³.

    T counts the model's targets (one per level for multi-fidelity, ``high-low`` for delta, one for single
    fidelity); atoms are given by atomic number, and one of an element the model lacks is a ValueError.

    ``elements``, ``fidelity``, ``levels`` and ``names`` (the targets) describe the model; they are plain
    attributes of the scripted module too, so an exported model describes itself to plain torch.
    """

    # Attribute types for TorchScript (``params``, an AEVParams, is the eager API and stays out of it).
    __jit_ignored_attributes__ = ["params"]
    constants: AEVConstants
    elements: list[str]
    fidelity: str
    levels: list[str]
    names: list[str]

    def __init__(
        self,
        params: AEVParams,
        potential: ChainedPotential,
        fidelity: str = "",
        levels: list[str] | tuple[str, ...] = (),
        names: list[str] | tuple[str, ...] = (),
    ):
        super().__init__()
        self.params = params
        self.constants = params.constants()
        self.elements = list(params.elements)
        self.fidelity = str(fidelity)
        self.levels = [str(level) for level in levels]
        self.names = [str(name) for name in names]
        self.potential = potential
        lookup = torch.full((max(params.atomic_numbers) + 1,), -1, dtype=torch.int64)
        lookup[list(params.atomic_numbers)] = torch.arange(params.n_elements)
        self.register_buffer("lookup", lookup)
        # Follows module.to(dtype) like the weights: the dtype inputs are cast to, readable in TorchScript.
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=next(potential.parameters()).dtype), persistent=False)

    @torch.jit.export
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
        species = self._species(numbers)
        # Forces and stress are gradients, so they need grad mode, also when the caller is in torch.no_grad().
        grad = forces or stress or torch.is_grad_enabled()
        if torch.jit.is_scripting():  # no try/finally nor grad-mode context managers in TorchScript
            grad_was = torch.is_grad_enabled()
            torch.set_grad_enabled(grad)
            out = self._predict(species, positions, offsets, cells, pbc, forces, stress)
            torch.set_grad_enabled(grad_was)
            return out
        else:
            with torch.set_grad_enabled(grad):
                return self._predict(species, positions, offsets, cells, pbc, forces, stress)

    def _species(self, numbers: Tensor) -> Tensor:
        """Element indices of atomic numbers; a ValueError for an element the model lacks (pykinml checks
        before the call, with file and frame; this guards a model that plain torch runs)."""
        clamped = numbers.clamp(0, self.lookup.numel() - 1)
        species = self.lookup[clamped]
        unknown = (species < 0) | (clamped != numbers)
        if bool(unknown.any()):
            atom = int(torch.nonzero(unknown)[0, 0])
            elements = ", ".join(self.elements)
            raise ValueError(f"atom {atom} has atomic number {int(numbers[atom])}, not one of this model's elements ({elements})")
        return species

    def _predict(
        self, species: Tensor, positions: Tensor, offsets: Tensor, cells: Tensor, pbc: Tensor, forces: bool, stress: bool
    ) -> dict[str, Tensor]:
        n_structures = offsets.numel() - 1
        counts = offsets[1:] - offsets[:-1]
        owner = torch.repeat_interleave(torch.arange(n_structures, device=offsets.device), counts)
        positions = positions.to(self.lookup.device, self._dtype())
        cells = cells.to(positions)
        inputs: list[Tensor] = []
        if forces:
            positions = positions.detach().requires_grad_(True)
            inputs.append(positions)
        strained_positions, strained_cells = positions, cells
        if stress:
            strain, strained_positions, strained_cells = apply_strain(positions, cells, owner, n_structures)
            inputs.append(strain)
        aev = aev_of_structures(self.constants, species, strained_positions, offsets, strained_cells, pbc)
        residual = self.potential(aev, species, owner, n_structures)
        out = {"energy": residual.detach().double() + self.potential.sae_energies(species, owner, n_structures)}
        if len(inputs) == 0:
            return out
        level_forces: list[Tensor] = []
        level_stress: list[Tensor] = []
        for level in range(residual.shape[0]):
            grads = torch.autograd.grad([residual[level].sum()], inputs, retain_graph=level + 1 < residual.shape[0])
            if forces:
                d_positions = grads[0]
                assert d_positions is not None
                level_forces.append(-d_positions.detach())
            if stress:
                d_strain = grads[-1]
                assert d_strain is not None
                level_stress.append(stress_from_strain_gradient(d_strain.detach(), cells))
        if forces:
            out["forces"] = torch.stack(level_forces)
        if stress:
            out["stress"] = torch.stack(level_stress)
        return out

    def forward(self, numbers: Tensor, positions: Tensor, cell: Tensor | None = None, pbc: Tensor | None = None) -> dict[str, Tensor]:
        """One structure: ``energy`` (T,), ``forces`` (T, N, 3) and, for a periodic cell, ``stress`` (T, 3, 3)."""
        cells = torch.zeros((1, 3, 3), dtype=positions.dtype, device=positions.device) if cell is None else cell.reshape(1, 3, 3)
        periodic = torch.zeros((1, 3), dtype=torch.bool, device=positions.device) if pbc is None else pbc.reshape(1, 3).to(torch.bool)
        offsets = torch.tensor([0, numbers.numel()], dtype=torch.int64, device=numbers.device)
        out = self.predict_batch(numbers, positions, offsets, cells, periodic, True, bool(periodic.any()))
        single: dict[str, Tensor] = {}
        for name, value in out.items():
            single[name] = value if name == "forces" else value.squeeze(1)
        return single

    def _dtype(self) -> torch.dtype:
        return self.dtype_probe.dtype
