"""The calculator's per-molecule path (AEV over all triples, stacked networks, the chain rule by hand) against
the batched kernels, ChainedPotential, autograd and finite differences, in float64.

The whole path on real trained models (every fidelity, through the ASE calculator) is checked against
``Model.predict`` in tests/test_predict.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from pykinml.aev.compute import aev_of_structures
from pykinml.aev.molecule import MoleculeAEV
from pykinml.aev.params import AEVParams
from pykinml.nn.activations import ACTIVATIONS
from pykinml.nn.potential import ChainedPotential
from pykinml.nn.stacked import StackedNetworks

from .test_aev import bent, random_cluster

F64 = torch.float64
torch.set_num_threads(1)


def geometries() -> list[Atoms]:
    """Mixed H/C/N/O molecules of 2–24 atoms: some pairs beyond both cutoffs, a near-linear triple, a lone pair."""
    spread = random_cluster(12, seed=5, density=0.02)  # sparse: many pairs beyond 3.8 and 5.2 Å
    return [
        Atoms("CH", positions=[[0, 0, 0], [0, 0, 1.1]]),
        bent("NCO", (1.2, 1.3), 179.9),  # θ near π, where the clamp of β·cos matters
        molecule("C6H6"),
        spread,
        random_cluster(24, seed=2),
    ]


def species_of(atoms: Atoms, params: AEVParams) -> torch.Tensor:
    return torch.tensor([params.elements.index(s) for s in atoms.get_chemical_symbols()])


@pytest.mark.parametrize("preset", ["original", "ani2x"])
def test_molecule_aev_equals_the_batched_kernels_and_its_gradient_equals_autograd(preset):
    params = AEVParams.original(("H", "C", "N", "O")) if preset == "original" else AEVParams.preset("ani2x")
    rng = np.random.default_rng(0)
    for atoms in geometries():
        species = species_of(atoms, params)
        positions = torch.tensor(atoms.positions, dtype=F64, requires_grad=True)
        offsets = torch.tensor([0, len(atoms)])
        expected = aev_of_structures(params.constants(), species, positions, offsets, torch.zeros(1, 3, 3, dtype=F64),
                                     torch.zeros(1, 3, dtype=torch.bool))
        computer = MoleculeAEV(params.constants(), species, F64)
        aev, saved = computer.forward(positions.detach()[None])
        assert aev.shape == (1, len(atoms), params.length)
        torch.testing.assert_close(aev[0], expected.detach(), rtol=0, atol=1e-12)
        weights = torch.tensor(rng.normal(size=aev.shape[1:]))
        (reference,) = torch.autograd.grad((expected * weights).sum(), positions)
        torch.testing.assert_close(computer.gradient(saved, weights[None])[0], reference, rtol=0, atol=1e-10)


def test_molecule_aev_gradient_equals_finite_differences():
    params = AEVParams.original(("H", "C", "N", "O"))
    atoms = random_cluster(9, seed=7)
    species = species_of(atoms, params)
    computer = MoleculeAEV(params.constants(), species, F64)
    weights = torch.tensor(np.random.default_rng(1).normal(size=(len(atoms), params.length)))
    _, saved = computer.forward(torch.tensor(atoms.positions)[None])
    gradient = computer.gradient(saved, weights[None])[0].numpy()
    step = 1e-5
    numeric = np.zeros_like(gradient)
    for i in range(len(atoms)):
        for c in range(3):
            values = []
            for sign in (1, -1):
                moved = atoms.positions.copy()
                moved[i, c] += sign * step
                values.append(float((computer.forward(torch.tensor(moved)[None])[0][0] * weights).sum()))
            numeric[i, c] = (values[0] - values[1]) / (2 * step)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("preset", ["original", "ani2x"])
def test_a_batch_of_conformations_equals_each_conformation_alone(preset):
    """B conformations in one call (what Model.predict runs for a trajectory) give each one's AEV, gradient and
    network outputs, whatever the rest of the batch is; B = 1 is the calculator's call."""
    params = AEVParams.original(("H", "C", "N", "O")) if preset == "original" else AEVParams.preset("ani2x")
    rng = np.random.default_rng(3)
    torch.manual_seed(0)
    potential = ChainedPotential(2, params.n_elements, params.length, [8], "gaussian", True).double()
    for atoms in geometries():
        species = species_of(atoms, params)
        computer = MoleculeAEV(params.constants(), species, F64)
        stacked = StackedNetworks(potential.state_dict(), 2, params.n_elements, ["gaussian"], species)
        conformations = torch.tensor(atoms.positions[None] + rng.normal(0, 0.1, (5, len(atoms), 3)))
        weights = torch.tensor(rng.normal(size=(5, len(atoms), params.length)))
        aev, saved = computer.forward(conformations)
        gradient = computer.gradient(saved, weights)
        energies, d_aev = stacked(aev)
        assert energies.shape == (2, 5, len(atoms)) and d_aev.shape == (2, 5, len(atoms), params.length)
        for b in range(5):
            alone, alone_saved = computer.forward(conformations[b : b + 1])
            torch.testing.assert_close(aev[b], alone[0], rtol=0, atol=1e-13)
            torch.testing.assert_close(gradient[b], computer.gradient(alone_saved, weights[b : b + 1])[0], rtol=0, atol=1e-12)
            alone_energies, alone_d_aev = stacked(alone)
            torch.testing.assert_close(energies[:, b], alone_energies[:, 0], rtol=0, atol=1e-12)
            torch.testing.assert_close(d_aev[:, b], alone_d_aev[:, 0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("bias", [True, False])
def test_stacked_networks_equal_the_chained_potential_and_autograd(activation, bias):
    torch.manual_seed(4)
    n_el, width, n_atoms = 4, 12, 9
    potential = ChainedPotential(3, n_el, width, [10, 7], activation, bias).double()
    species = torch.tensor([2, 0, 0, 1, 3, 0, 2, 0, 1])  # elements of uneven counts: padded groups
    # Softplus: inputs large enough for pre-activations on both sides of nn.Softplus's linear threshold (20).
    scale = 40.0 if activation == "softplus" else 1.0
    aev = (scale * torch.randn(n_atoms, width, dtype=F64)).requires_grad_(True)
    atomic = potential.atomic(aev, species)
    stacked = StackedNetworks(potential.state_dict(), 3, n_el, [activation] * 2, species)
    energies, gradients = stacked(aev.detach()[None])
    energies, gradients = energies[:, 0], gradients[:, 0]
    torch.testing.assert_close(energies, atomic.detach(), rtol=0, atol=1e-12)
    # torch's CELU backward rounds 1/α through float32 (relative errors up to ~1e-7 in float64); the hand-written
    # derivative is exact, so CELU is compared at that tolerance.
    rtol = 1e-6 if activation == "celu" else 0.0
    for level in range(3):  # each atom's energy depends on its own AEV only, so the sum's gradient is per atom
        (reference,) = torch.autograd.grad(atomic[level].sum(), aev, retain_graph=True)
        torch.testing.assert_close(gradients[level], reference, rtol=rtol, atol=1e-12)
