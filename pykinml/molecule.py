"""Energies and forces of one small molecule of fixed atoms, at one or many conformations: the ASE
calculator's path, and :meth:`pykinml.predict.Model.predict`'s for the frames of a trajectory.

A calculator is called again and again on the same atoms at new positions (optimisation, MD), one
structure per call, so the cost is per-call overhead, not arithmetic. :class:`MoleculePotential` builds
what depends on the atoms once, the AEV's pairs and triples (:class:`~pykinml.aev.molecule.MoleculeAEV`) and
the element networks stacked (:class:`~pykinml.nn.stacked.StackedNetworks`), and then computes energies and
forces with the chain rule written out: no neighbour search, no autograd graph. Many conformations go
through in one call (B of them as a leading dimension). The numbers are those of the neighbour-list kernels
(tests compare them); periodic cells and molecules of more than :data:`MAX_ATOMS` atoms, where every-triple
work outgrows a neighbour list, take those kernels.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from pykinml.aev.molecule import MoleculeAEV
from pykinml.nn.networks import layer_activations
from pykinml.nn.stacked import StackedNetworks

if TYPE_CHECKING:
    from pykinml.predict import Model

#: the largest molecule computed over all its triples: the batched path costs the same at ≈ 20 atoms (C/H clusters)
MAX_ATOMS = 18


class MoleculePotential:
    """Energies (T,) in eV (SAEs included) and forces (T, N, 3) in eV/Å of ``model``'s targets for one molecule
    of the atomic numbers ``numbers``, at any positions: ``energies, forces = potential(positions)``; positions
    (B, N, 3) give energies (T, B) and forces (T, B, N, 3)."""

    def __init__(self, model: Model, numbers: np.ndarray, compile: bool = False):
        self.compile, self._traced = compile, None
        self.numbers = np.array(numbers, dtype=np.int64)
        self.dtype, self.device = model.dtype, model.device
        species = torch.as_tensor(model.species(self.numbers), device=self.device)
        prefix = "potential."
        state = {k[len(prefix):]: v for k, v in model.module.state_dict().items() if k.startswith(prefix)}
        config = model.meta["config"]["model"]
        activations = layer_activations(config["activations"], len(config["neurons"]))
        sae = state["sae"].to(torch.float64)
        self.aev = MoleculeAEV(model.params.constants(), species, self.dtype, self.device)
        self.networks = StackedNetworks(state, sae.shape[0], model.params.n_elements, activations, species)
        self.sae = sae[:, species].sum(dim=1).cpu().numpy()  # (T,) Σ_i SAE_l(Z_i)

    def _compute(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Network energies (T, B) without the SAEs, and forces (T, B, N, 3), of B conformations (B, N, 3)."""
        aev, saved = self.aev.forward(positions)
        atomic, d_aev = self.networks(aev)
        return atomic.sum(dim=-1), torch.stack([-self.aev.gradient(saved, d_level) for d_level in d_aev])

    def __call__(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energies (T,) and forces (T, N, 3) at ``positions`` (N, 3); for B conformations (B, N, 3), energies
        (T, B) and forces (T, B, N, 3)."""
        positions = torch.as_tensor(positions, dtype=self.dtype, device=self.device)
        single = positions.dim() == 2
        with torch.no_grad():
            if single and self.compile and self._traced is None:
                # TorchScript runs the same operations with less Python around each (a call takes ~30 % less
                # time); what depends on the atoms (indices, weights) is fixed in the traced graph.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._traced = torch.jit.trace(self._compute, (positions[None],), check_trace=False)
            compute = self._traced if single and self._traced is not None else self._compute
            residual, forces = compute(positions[None] if single else positions)
        energies = residual.double().cpu().numpy() + self.sae[:, None]
        forces = forces.double().cpu().numpy()
        return (energies[:, 0], forces[:, 0]) if single else (energies, forces)
