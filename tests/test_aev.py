"""pykinml.aev against TorchANI 2.9, finite differences, autograd, symmetry and supercells (float64).

References (see tests/torchani_reference.py): ``torchani_aev`` is TorchANI's AEVComputer with our exact
constants, rescaled to our convention; ``reference_aev_numpy`` is a slow direct loop over i, j, k and
all periodic images. TorchANI is wrong for mixed periodicity, so mixed-pbc cells are checked against a
replicated non-periodic supercell and the numpy loops instead.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from pykinml.aev import AEVComputer, AEVParams, Structures, compute, dense, forces, pack_atoms
from pykinml.aev.gather_contract import contract, gather_contract, scatter
from pykinml.errors import PykinmlError

from .torchani_reference import (
    TORCHANI_ANGULAR_PREFACTOR,
    TORCHANI_RADIAL_PREFACTOR,
    reference_aev_numpy,
    torchani_aev,
    torchani_preset_aev,
    torchani_preset_constants,
)

F64 = torch.float64
ELEMENTS = ("H", "C", "N", "O")
PARAMS = AEVParams.original(ELEMENTS)
TRICLINIC = np.array([[5.3, 0.0, 0.0], [1.1, 5.0, 0.0], [-0.7, 0.9, 5.6]])
TINY = np.array([[2.1, 0.0, 0.0], [0.6, 2.3, 0.0], [0.4, -0.5, 2.6]])  # widths ≈ 2 Å ≪ 5.2 Å cutoff


def constants(params: AEVParams) -> dict:
    """Our AEVParams as keyword arguments of the reference functions (the same numbers, renamed)."""
    return {
        "elements": params.elements,
        "rc_rad": params.radial_cutoff,
        "rc_ang": params.angular_cutoff,
        "radial_shifts": params.radial_shifts,
        "radial_eta": params.radial_eta,
        "angular_shifts": params.angular_shifts,
        "angular_eta": params.angular_eta,
        "angle_sections": params.angle_sections,
        "zeta": params.zeta,
        "beta": params.beta,
    }


HCNO = constants(PARAMS)

# TorchANI 2.9 builds its modules with torch.jit.script, deprecated in recent torch
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def torchani():
    return pytest.importorskip("torchani")


@pytest.fixture(scope="module")
def computer() -> AEVComputer:
    return AEVComputer(params=PARAMS, dtype=F64)


# --------------------------------------------------------------------------------------------------
# geometries
# --------------------------------------------------------------------------------------------------


def random_cluster(
    n: int, seed: int, symbols=ELEMENTS, density: float = 0.1, min_distance: float = 0.9
) -> Atoms:
    """``n`` atoms in a ball at an organic molecule's density (≈ 0.1 atoms/Å³, H included), no pair closer
    than ``min_distance`` Å, centred near the origin (so that the structures of a batch overlap in space)."""
    rng = np.random.default_rng(seed)
    radius = (3 * n / (4 * math.pi * density)) ** (1 / 3)
    points: list[np.ndarray] = []
    while len(points) < n:
        p = rng.uniform(-radius, radius, 3)
        if np.linalg.norm(p) <= radius and all(np.linalg.norm(p - q) >= min_distance for q in points):
            points.append(p)
    return Atoms(
        list(rng.choice(list(symbols), size=n)), positions=np.array(points) + rng.normal(scale=0.3, size=3)
    )


def random_crystal(n: int, seed: int, cell: np.ndarray, pbc=True, min_distance: float = 0.9) -> Atoms:
    """``n`` H/C/N/O atoms in ``cell`` at fractional coordinates in [-0.4, 1.4) (many outside the cell),
    no two periodic images closer than ``min_distance`` Å."""
    rng = np.random.default_rng(seed)
    images = np.array(list(itertools.product((-2, -1, 0, 1, 2), repeat=3))) @ cell
    assert np.linalg.norm(images, axis=1)[np.any(images != 0, axis=1)].min() >= min_distance
    frac: list[np.ndarray] = []
    while len(frac) < n:
        f = rng.uniform(-0.4, 1.4, 3)
        if all(np.linalg.norm(f @ cell - q @ cell + images, axis=1).min() >= min_distance for q in frac):
            frac.append(f)
    return Atoms(
        list(rng.choice(list(ELEMENTS), size=n)), positions=np.array(frac) @ cell, cell=cell, pbc=pbc
    )


def supercell(atoms: Atoms, cutoff: float) -> Atoms:
    """A non-periodic replica of a periodic ``atoms`` whose first ``len(atoms)`` atoms are the original ones.

    Images n ∈ [-reach, reach]³ (only along periodic axes) are generated, and only those within ``cutoff``
    + 0.5 Å of an original atom kept (no other image can enter its AEV); ``reach`` grows until the outermost
    shell |n|∞ = reach has no such image, which proves the replica is big enough.
    """
    cell = np.asarray(atoms.cell)
    for reach in itertools.count(2):
        ranges = [range(-reach, reach + 1) if p else range(1) for p in atoms.pbc]
        shifts = np.array(sorted(itertools.product(*ranges), key=lambda n: np.abs(n).sum()))  # (0,0,0) first
        positions = (atoms.positions[None, :, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3)
        shell = np.repeat(np.abs(shifts).max(axis=1) == reach, len(atoms))
        distance = np.linalg.norm(positions[:, None] - atoms.positions[None], axis=2).min(axis=1)
        keep = distance <= cutoff + 0.5
        if not (keep & shell).any():
            assert not shifts[0].any()
            return Atoms(numbers=np.tile(atoms.numbers, len(shifts))[keep], positions=positions[keep])
    raise AssertionError("unreachable")


def bent(symbols: str, bond_lengths, angle_deg: float) -> Atoms:
    """A triatomic (or, with a 4th symbol, tetra-atomic) chain A–B–C(–D) with angle ∠ABC = ``angle_deg``."""
    r1, r2 = bond_lengths[:2]
    t = math.radians(angle_deg)
    positions = [[-r1, 0.0, 0.0], [0.0, 0.0, 0.0], [-r2 * math.cos(t), r2 * math.sin(t), 0.0]]
    if len(bond_lengths) == 3:
        positions.append([-(r2 + bond_lengths[2]) * math.cos(t), (r2 + bond_lengths[2]) * math.sin(t), 0.0])
    return Atoms(symbols, positions=positions)


def rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# --------------------------------------------------------------------------------------------------
# 1. values against TorchANI, supercells and the numpy loops
# --------------------------------------------------------------------------------------------------


def mixed_batch() -> list[Atoms]:
    """Molecules of 2–100 atoms and various compositions, all overlapping near the origin."""
    frames = [
        random_cluster(2, 1, ("C", "O")),
        random_cluster(100, 2),
        random_cluster(7, 3, ("H", "N")),
        random_cluster(3, 4, ("O",)),
        random_cluster(33, 5, ("H", "C")),
        random_cluster(12, 6),
        molecule("CH3CH2OH"),
        random_cluster(60, 7, ("N", "O", "H")),
        random_cluster(1, 8),
        random_cluster(21, 9),
    ]
    assert {len(a) for a in frames} >= {2, 100} and sum(len(a) for a in frames) == 248
    return frames


def test_batched_molecules_match_torchani(torchani, computer):
    frames = mixed_batch()
    ours = computer.aev(frames)  # one batched call on 248 atoms of 10 structures
    assert isinstance(ours, list) and len(ours) == len(frames)
    worst = 0.0
    for atoms, got in zip(frames, ours):
        ref = torchani_aev(atoms.get_chemical_symbols(), atoms.positions, **HCNO)
        assert got.shape == ref.shape == (len(atoms), 704) and got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
        worst = max(worst, float(np.abs(got - ref).max()))
    # the references are not trivial: large values and most angular blocks populated in the big ones
    big = ours[1]
    assert big.max() > 1.5 and np.count_nonzero(big[:, 64:]) > 0.5 * big[:, 64:].size
    assert ours[8].shape == (1, 704) and not ours[8].any()  # a lone atom has a zero AEV
    # one structure at a time gives the same rows as the batch (bit for bit is not required)
    for atoms, got in zip(frames[:3], ours[:3]):
        np.testing.assert_allclose(computer.aev(atoms), got, rtol=0, atol=1e-13)
    print(f"max |ours - torchani| over the batch: {worst:.2e}")


def test_small_molecules_all_pairs_equal_the_cell_list():
    """Batches of molecules up to 48 atoms test all pairs instead of binning: the same pairs, in the same order."""
    from pykinml.aev.neighbors import neighbor_search

    frames = [a for a in mixed_batch() if len(a) <= 48]
    assert len(frames) >= 6 and max(len(a) for a in frames) > 20
    packed = pack_atoms(PARAMS, frames, F64)
    args = (packed.positions, packed.offsets, packed.cells, packed.pbc, PARAMS.max_cutoff)
    fast, cells = neighbor_search(*args), neighbor_search(*args, all_pairs_up_to=0)
    assert fast[0].numel() > 1000
    for a, b in zip(fast, cells):
        assert torch.equal(a, b)


def test_periodic_triclinic_matches_torchani_and_supercell(torchani, computer):
    crystal = random_crystal(10, 11, TRICLINIC)
    outside = np.linalg.solve(TRICLINIC.T, crystal.positions.T).T
    assert ((outside < 0) | (outside >= 1)).any(axis=1).sum() >= 3  # several atoms outside the cell
    got = computer.aev(crystal)
    ref = torchani_aev(crystal.get_chemical_symbols(), crystal.positions, **HCNO, cell=TRICLINIC, pbc=True)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
    replica = supercell(crystal, PARAMS.max_cutoff)
    assert len(replica) > 20 * len(crystal)
    np.testing.assert_allclose(computer.aev(replica)[: len(crystal)], got, rtol=0, atol=1e-10)


def test_mixed_pbc_matches_supercell_and_numpy(computer):
    crystal = random_crystal(10, 12, TRICLINIC, pbc=(True, True, False))
    got = computer.aev(crystal)
    replica = supercell(crystal, PARAMS.max_cutoff)
    np.testing.assert_allclose(computer.aev(replica)[: len(crystal)], got, rtol=0, atol=1e-10)
    ref = reference_aev_numpy(
        crystal.get_chemical_symbols(), crystal.positions, **HCNO, cell=TRICLINIC, pbc=crystal.pbc
    )
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
    # and it is not the fully periodic AEV
    assert np.abs(got - computer.aev(random_crystal(10, 12, TRICLINIC))).max() > 0.1


def test_tiny_cell_many_images(torchani, computer):
    crystal = Atoms(
        "CHO", positions=[[0.1, 0.2, 0.3], [1.5, 1.2, -3.0], [4.4, -1.0, 1.9]], cell=TINY, pbc=True
    )
    got = computer.aev(crystal)
    ref = torchani_aev(crystal.get_chemical_symbols(), crystal.positions, **HCNO, cell=TINY, pbc=True)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
    assert got[:, :64].sum() > 20  # dozens of images of each atom within the radial cutoff
    replica = supercell(crystal, PARAMS.max_cutoff)
    np.testing.assert_allclose(computer.aev(replica)[:3], got, rtol=0, atol=1e-10)


def test_periodic_and_molecules_in_one_batch(computer):
    """Periodic, mixed-pbc, tiny-cell and open structures batched together give their one-by-one AEVs."""
    frames = [
        molecule("CH3CH2OH"),
        random_crystal(10, 11, TRICLINIC),
        Atoms("CH", positions=[[0.1, 0.2, 0.3], [1.5, 1.2, -3.0]], cell=TINY, pbc=True),
        random_cluster(30, 13),
        random_crystal(8, 14, TRICLINIC, pbc=(False, True, True)),
        molecule("CH4"),
    ]
    for atoms, got in zip(frames, computer.aev(frames)):
        np.testing.assert_allclose(got, computer.aev(atoms), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# 2. ANI presets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ani1x", "ani2x"])
def test_presets_match_torchani(torchani, name):
    params, ref = AEVParams.preset(name), torchani_preset_constants(name)
    assert params.elements == ref["elements"]
    for ours, theirs in (
        (params.radial_cutoff, ref["rc_rad"]),
        (params.angular_cutoff, ref["rc_ang"]),
        (params.radial_eta, ref["radial_eta"]),
        (params.angular_eta, ref["angular_eta"]),
        (params.zeta, ref["zeta"]),
        (params.beta, ref["beta"]),
        (params.radial_scale, TORCHANI_RADIAL_PREFACTOR),
        (params.angular_scale, TORCHANI_ANGULAR_PREFACTOR),
    ):
        assert abs(ours - theirs) <= 1e-12
    for field, key in (("radial_shifts", "radial_shifts"), ("angular_shifts", "angular_shifts")):
        assert len(getattr(params, field)) == len(ref[key])
        np.testing.assert_allclose(getattr(params, field), ref[key], rtol=0, atol=1e-12)
    np.testing.assert_allclose(params.angle_sections, ref["angle_sections"], rtol=0, atol=1e-12)

    symbols = params.elements
    frames = [molecule("CH3CH2OH"), random_cluster(25, 21, symbols), random_cluster(6, 22, symbols)]
    ours = AEVComputer.preset(name, dtype=F64).aev(frames)
    for atoms, got in zip(frames, ours):
        args = (name, atoms.get_chemical_symbols(), atoms.positions)
        # TorchANI stores its constants as float32 buffers; torchani_preset_aev puts back the exact float64
        # values its constructors received, so both sides then evaluate the same formula on the same
        # constants and agree to float64 round-off.
        np.testing.assert_allclose(got, torchani_preset_aev(*args), rtol=0, atol=1e-10)
        # With the float32-rounded buffers (what torchani.models.ANI1x().double() really uses) the
        # constants differ by ~1e-7 relative (eta = 19.7 or 14.1, shifts like 1.0875, sections π/8…),
        # which moves AEVs of size ~1–5 by up to ~1e-6: agreement only to ~1e-5.
        np.testing.assert_allclose(got, torchani_preset_aev(*args, exact_constants=False), rtol=0, atol=1e-5)


def test_unknown_preset():
    with pytest.raises(PykinmlError, match="ani3x"):
        AEVParams.preset("ani3x")
    with pytest.raises(PykinmlError, match="ani3x"):
        AEVComputer.preset("ani3x")


# --------------------------------------------------------------------------------------------------
# 3. Jacobians: finite differences and autograd
# --------------------------------------------------------------------------------------------------


def finite_differences(computer: AEVComputer, atoms: Atoms, step: float = 1e-5) -> np.ndarray:
    """Central differences (N, D, N, 3) of ``computer.aev``, all 6N displaced copies in one batched call."""
    n = len(atoms)
    frames = []
    for a, c, sign in itertools.product(range(n), range(3), (1.0, -1.0)):
        moved = atoms.copy()
        moved.positions[a, c] += sign * step
        frames.append(moved)
    values = np.array(computer.aev(frames)).reshape(n, 3, 2, n, -1)
    return ((values[:, :, 0] - values[:, :, 1]) / (2 * step)).transpose(2, 3, 0, 1)


def autograd_jacobian(params: AEVParams, atoms: Atoms) -> tuple[np.ndarray, torch.Tensor, Structures]:
    """∂G/∂x (N, D, N, 3) by forward-mode autodiff (torch.func.jacfwd) through ``compute``."""
    packed = pack_atoms(params, [atoms], F64)

    def aev_of(positions):
        moved = Structures(packed.species, positions, packed.offsets, packed.cells, packed.pbc)
        return compute(params, moved)[0]

    return torch.func.jacfwd(aev_of)(packed.positions.clone()).numpy(), aev_of, packed


def check_jacobian(
    computer: AEVComputer, atoms: Atoms, fd_tolerance: float = 1e-8
) -> tuple[np.ndarray, dict]:
    """Analytic Jacobian vs finite differences (≤ fd_tolerance·max|J|) and vs autodiff (≤ 1e-12·max|J|)."""
    jac = computer.jacobian(atoms)
    n = len(atoms)
    assert jac.shape == (n, computer.length, n, 3)
    scale = float(np.abs(jac).max())
    assert scale > 0.1
    fd = finite_differences(computer, atoms)
    fd_error = float(np.abs(jac - fd).max())
    assert fd_error <= fd_tolerance * scale, (fd_error, scale)
    # forward mode gives the whole Jacobian; reverse mode is checked on random cotangents v: v·J.
    exact, aev_of, packed = autograd_jacobian(computer.params, atoms)
    ad_error = float(np.abs(jac - exact).max())
    assert ad_error <= 1e-12 * scale, (ad_error, scale)
    positions = packed.positions.clone().requires_grad_(True)
    values = aev_of(positions)
    cotangents = torch.randn((4, *values.shape), dtype=F64, generator=torch.Generator().manual_seed(0))
    (vjp,) = torch.autograd.grad(values, positions, cotangents, is_grads_batched=True)
    expected = np.einsum("kid,idjc->kjc", cotangents.numpy(), jac)
    vjp_error = float(np.abs(vjp.numpy() - expected).max())
    assert vjp_error <= 1e-12 * np.abs(expected).max()
    # translation invariance: ∂G_i/∂x summed over all atoms vanishes
    assert np.abs(jac.sum(axis=2)).max() <= 1e-12 * scale
    errors = {"fd": fd_error / scale, "autograd": ad_error / scale, "vjp": vjp_error / np.abs(expected).max()}
    return jac, errors


JACOBIAN_CASES = {
    "ethanol": molecule("CH3CH2OH"),
    "cluster12": random_cluster(12, 31),
    "CO2_linear": Atoms("OCO", positions=[[-1.16, 0, 0], [0, 0, 0], [1.16, 0, 0]]),
    "CO2_bent_0.5deg": bent("OCO", (1.16, 1.17), 179.5),
    "HCN_linear": Atoms("HCN", positions=[[0, 0, -1.066], [0, 0, 0], [0, 0, 1.153]]),
    "C2H2_linear": molecule("C2H2"),
    "C2H2_bent_1e-3deg": bent("HCCH", (1.06, 1.2, 1.06), 180 - 1e-3),
    # θ ≈ 0 at the end atoms (j, k in the same direction) and θ ≈ π in the middle, 0.01° off collinear
    "near_collinear_chain": Atoms(
        "CNOCH", positions=[[0, 0, 0], [1.3, 1e-4, 0], [2.6, -1e-4, 2e-4], [3.5, 0, 1e-4], [4.6, 3e-4, 0]]
    ),
    "periodic_triclinic": random_crystal(4, 32, TRICLINIC),
    "periodic_tiny": Atoms("CH", positions=[[0.1, 0.2, 0.3], [1.5, 1.2, -3.0]], cell=TINY, pbc=True),
    "mixed_pbc": random_crystal(4, 33, TRICLINIC, pbc=(True, False, True)),
}


def cutoff_case(distance: float) -> Atoms:
    """C–O at ``distance`` plus two H near C, so the C–O pair enters radial and angular terms."""
    return Atoms("COHH", positions=[[0, 0, 0], [distance, 0, 0], [0.3, 1.0, 0.2], [-0.2, -0.4, 1.0]])


for cutoff in (5.2, 3.8):
    for delta in (-1e-4, 1e-4):
        JACOBIAN_CASES[f"pair_at_{cutoff}{delta:+g}"] = cutoff_case(cutoff + delta)


@pytest.mark.parametrize("name", list(JACOBIAN_CASES))
def test_jacobian(computer, name):
    jac, errors = check_jacobian(computer, JACOBIAN_CASES[name])
    print(name, {k: f"{v:.1e}" for k, v in errors.items()})
    if name.startswith("pair_at_"):
        # ∂G_C/∂x_O: radial O block (columns 48–63) non-zero iff r_CO < 5.2; angular blocks iff r_CO < 3.8
        radial, angular = np.abs(jac[0, 48:64, 1]).max(), np.abs(jac[0, 64:, 1]).max()
        inside = "-" in name
        if name.startswith("pair_at_5.2"):
            assert (radial > 1e-6) == inside and angular == 0.0
        else:
            assert radial > 1e-3 and (angular > 1e-6) == inside


@pytest.mark.parametrize("cutoff", [5.2, 3.8])
def test_jacobian_pair_exactly_at_cutoff(computer, cutoff):
    """r = R_c exactly: f_c and f_c' vanish there but f_c'' jumps, so central differences straddling the
    kink are only first-order accurate (error ≈ h·f_c''/4 ≈ 1e-7 with h = 1e-5): a looser FD bound."""
    atoms = cutoff_case(cutoff)
    assert np.linalg.norm(atoms.positions[1] - atoms.positions[0]) == cutoff
    _, errors = check_jacobian(computer, atoms, fd_tolerance=2e-6)
    print(cutoff, {k: f"{v:.1e}" for k, v in errors.items()})


def test_batched_jacobians(computer):
    """The dense Jacobians of a batch (sliced per structure from one call) equal the one-by-one ones."""
    names = ["periodic_tiny", "ethanol", "CO2_linear", "mixed_pbc", "cluster12"]
    frames = [JACOBIAN_CASES[name] for name in names]
    for atoms, got in zip(frames, computer.jacobian(frames)):
        np.testing.assert_allclose(got, computer.jacobian(atoms), rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", ["ethanol", "CO2_bent_0.5deg", "cluster12"])
def test_jacobian_beta_one(name):
    atoms = JACOBIAN_CASES[name]
    computer = AEVComputer(ELEMENTS, beta=1.0, dtype=F64)
    assert computer.params.beta == 1.0
    _, errors = check_jacobian(computer, atoms)
    print(name, {k: f"{v:.1e}" for k, v in errors.items()})


# --------------------------------------------------------------------------------------------------
# 4. forces from the stored Jacobian rows
# --------------------------------------------------------------------------------------------------


def element_networks(params: AEVParams, dtype, seed: int = 0) -> list[torch.nn.Module]:
    torch.manual_seed(seed)
    return [
        torch.nn.Sequential(
            torch.nn.Linear(params.length, 24),
            torch.nn.CELU(),
            torch.nn.Linear(24, 8),
            torch.nn.Tanh(),
            torch.nn.Linear(8, 1),
        ).to(dtype)
        for _ in params.elements
    ]


def energy(networks, species: torch.Tensor, aev: torch.Tensor) -> torch.Tensor:
    """E = Σ_i NN_el(i)(G_i) over the whole batch (the per-structure split does not matter for forces)."""
    atomic = aev.new_zeros(aev.shape[0])
    for e, network in enumerate(networks):
        mask = species == e
        atomic = atomic.index_put((mask,), network(aev[mask]).squeeze(1))
    return atomic.sum()


def forces_both_ways(frames, dtype):
    networks = element_networks(PARAMS, dtype)
    packed = pack_atoms(PARAMS, frames, dtype)
    aev, jacobian = compute(PARAMS, packed, jacobian=True)
    g = aev.detach().requires_grad_(True)
    (dE_dG,) = torch.autograd.grad(energy(networks, packed.species, g), g)
    ours = forces(PARAMS, packed.species, dE_dG, jacobian)
    positions = packed.positions.clone().requires_grad_(True)
    moved = Structures(packed.species, positions, packed.offsets, packed.cells, packed.pbc)
    (dE_dx,) = torch.autograd.grad(energy(networks, packed.species, compute(PARAMS, moved)[0]), positions)
    return ours.numpy(), -dE_dx.numpy()


def force_batch() -> list[Atoms]:
    frames = [molecule("CH4"), molecule("H2O"), molecule("CH3CH2OH"), molecule("NH3"), random_cluster(30, 41)]
    species = np.concatenate([a.numbers for a in frames])
    assert (np.diff(species) != 0).sum() > 10  # not sorted by element
    return frames


def test_forces_match_autograd():
    frames = force_batch() + [random_crystal(6, 42, TRICLINIC)]
    ours, reference = forces_both_ways(frames, F64)
    assert ours.shape == (sum(len(a) for a in frames), 3)
    scale = np.abs(reference).max()
    assert scale > 1e-3
    error = np.abs(ours - reference).max()
    assert error <= 1e-10 * max(scale, 1.0)
    print(f"forces: max |F| = {scale:.3g}, max error {error:.1e}")


def test_force_contraction_backward_matches_the_dense_jacobian():
    """Training on forces back-propagates a loss on F = −Jᵀ·∂E/∂G into ∂E/∂G through a hand-written backward (on
    CPU the transposed numba pass of :mod:`pykinml.aev.force_contraction`): it must equal autograd through the
    dense Jacobian, and pass gradcheck and gradgradcheck (the backward is itself differentiated when a later loss
    term needs it)."""
    packed = pack_atoms(PARAMS, force_batch(), F64)
    _, jacobian = compute(PARAMS, packed, jacobian=True)
    generator = torch.Generator().manual_seed(3)
    dE_dG = torch.randn(packed.species.numel(), PARAMS.length, dtype=F64, generator=generator, requires_grad=True)
    weight = torch.randn(packed.species.numel(), 3, dtype=F64, generator=generator)
    (ours,) = torch.autograd.grad((forces(PARAMS, packed.species, dE_dG, jacobian) * weight).sum(), dE_dG)
    full = dense(PARAMS, packed.species, jacobian)  # (N, D, N, 3)
    reference_forces = -torch.einsum("id,idjc->jc", dE_dG, full)
    (reference,) = torch.autograd.grad((reference_forces * weight).sum(), dE_dG)
    assert float(reference.abs().max()) > 1e-3
    assert torch.allclose(ours, reference, rtol=0, atol=1e-12 * float(reference.abs().max()))
    few = pack_atoms(PARAMS, force_batch()[:1], F64)
    _, few_jacobian = compute(PARAMS, few, jacobian=True)
    small = dE_dG[: few.species.numel()].detach().requires_grad_(True)  # CH4 alone
    assert torch.autograd.gradcheck(lambda g: forces(PARAMS, few.species, g, few_jacobian), (small,), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda g: forces(PARAMS, few.species, g, few_jacobian), (small,), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_gather_contract_kernels_equal_the_torch_operations(dtype):
    """The numba kernels of the angular contraction and its transpose against the torch operations (an
    independent formulation: gathered rows, vecdot, index_add) on random blocks whose rows repeat (many pairs
    read and write the same row), in both dtypes; and gradcheck/gradgradcheck through the kernels."""
    generator = torch.Generator().manual_seed(5)
    blocks = torch.randn(700, 3, 64, dtype=dtype, generator=generator)
    source = torch.randn(90, 64, dtype=dtype, generator=generator)
    index = torch.randint(0, 90, (700,), generator=generator)
    grad = torch.randn(700, 3, dtype=dtype, generator=generator)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    ours, reference = contract(blocks, source, index, kernels=True), contract(blocks, source, index, kernels=False)
    assert ours.dtype == dtype and float(reference.abs().max()) > 1.0
    assert torch.allclose(ours, reference, rtol=0, atol=tolerance * float(reference.abs().max()))
    ours, reference = scatter(blocks, grad, index, 90, kernels=True), scatter(blocks, grad, index, 90, kernels=False)
    assert torch.allclose(ours, reference, rtol=0, atol=tolerance * float(reference.abs().max()))
    assert int((reference.abs().sum(dim=1) == 0).sum()) == int((torch.bincount(index, minlength=90) == 0).sum())
    if dtype == F64:
        few = (blocks[:40], source[:12].clone().requires_grad_(True), index[:40] % 12)
        assert torch.autograd.gradcheck(lambda g: gather_contract(few[0], g, few[2]), (few[1],))
        assert torch.autograd.gradgradcheck(lambda g: gather_contract(few[0], g, few[2]), (few[1],))
    with pytest.raises(RuntimeError, match="blocks are data"):
        gather_contract(blocks.requires_grad_(True), source, index)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_force_contraction_kernels_equal_the_torch_operations(dtype):
    """∂E/∂x from ∂E/∂G in one numba pass over the pairs (and its transpose, the backward of a loss on forces)
    against the torch operations (pair gradients gathered, contracted and index-added), on a real batch of
    molecules and a cluster with four elements, in both dtypes; a float64 ∂E/∂G with float32 rows computes in
    float64; gradcheck and gradgradcheck through the kernels."""
    packed = pack_atoms(PARAMS, force_batch(), dtype)
    _, jacobian = compute(PARAMS, packed, jacobian=True)
    generator = torch.Generator().manual_seed(11)
    n = packed.species.numel()
    dE_dG = torch.randn(n, PARAMS.length, dtype=dtype, generator=generator)
    weight = torch.randn(n, 3, dtype=dtype, generator=generator)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12

    def forces_and_backward(kernels: bool, source: torch.Tensor):
        source = source.clone().requires_grad_(True)
        out = forces(PARAMS, packed.species, source, jacobian, kernels=kernels)
        (back,) = torch.autograd.grad((out * weight.to(out.dtype)).sum(), source)
        return out.detach(), back

    for ours, reference in zip(forces_and_backward(True, dE_dG), forces_and_backward(False, dE_dG)):
        assert ours.dtype == dtype and float(reference.abs().max()) > 1e-2
        assert torch.allclose(ours, reference, rtol=0, atol=tolerance * float(reference.abs().max()))
    if dtype == torch.float32:
        ours = forces(PARAMS, packed.species, dE_dG.double(), jacobian, kernels=True)
        reference = forces(PARAMS, packed.species, dE_dG.double(), jacobian.to(dtype=F64), kernels=False)
        assert ours.dtype == F64 and torch.allclose(ours, reference, rtol=0, atol=1e-12 * float(reference.abs().max()))
        return
    few = pack_atoms(PARAMS, force_batch()[:2], F64)
    _, few_jacobian = compute(PARAMS, few, jacobian=True)
    small = dE_dG[: few.species.numel()].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda g: forces(PARAMS, few.species, g, few_jacobian, kernels=True), (small,))
    assert torch.autograd.gradgradcheck(lambda g: forces(PARAMS, few.species, g, few_jacobian, kernels=True), (small,))
    with pytest.raises(RuntimeError, match="rows are data"):
        forces(PARAMS, few.species, small, replace(few_jacobian, angular=few_jacobian.angular.clone().requires_grad_(True)),
               kernels=True)


def test_forces_float32_agrees_with_float64():
    frames = force_batch()
    f32, ref32 = forces_both_ways(frames, torch.float32)
    f64, _ = forces_both_ways(frames, F64)
    assert f32.dtype == np.float32
    scale = np.abs(f64).max()
    error32, error_ref = np.abs(f32 - f64).max(), np.abs(ref32 - f64).max()
    # float32 round-off (~6e-8 relative) accumulated over hundreds of terms per atom: ~1e-6 of max |F|
    assert error32 <= 1e-5 * scale and error_ref <= 1e-5 * scale
    print(
        f"float32 forces: max |F| = {scale:.3g}, max error {error32:.1e} (autograd float32: {error_ref:.1e})"
    )


# --------------------------------------------------------------------------------------------------
# 5. invariance
# --------------------------------------------------------------------------------------------------


def test_invariance(computer):
    atoms = random_cluster(24, 51)
    reference = computer.aev(atoms)
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation(52).T + np.array([3.7, -12.1, 40.3])
    permutation = np.arange(len(atoms))
    rng = np.random.default_rng(53)
    for number in np.unique(atoms.numbers):  # shuffle the atoms of each element among themselves
        same = np.flatnonzero(atoms.numbers == number)
        permutation[same] = rng.permutation(same)
    assert (permutation != np.arange(len(atoms))).sum() > 10
    shuffled = atoms[permutation]
    rotated, permuted = computer.aev([moved, shuffled])
    np.testing.assert_allclose(rotated, reference, rtol=0, atol=1e-12)
    np.testing.assert_allclose(permuted, reference[permutation], rtol=0, atol=1e-12)


def test_periodic_invariance(computer):
    """Rotating cell and atoms together, or moving an atom by a lattice vector, changes nothing."""
    crystal = random_crystal(8, 54, TRICLINIC)
    reference = computer.aev(crystal)
    r = rotation(55)
    rotated = Atoms(crystal.numbers, positions=crystal.positions @ r.T, cell=TRICLINIC @ r.T, pbc=True)
    hopped = crystal.copy()
    hopped.positions[[0, 3]] += np.array([[2, -1, 0], [0, 1, -3]]) @ TRICLINIC
    for got in computer.aev([rotated, hopped]):
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# 6. errors, 7. CUDA
# --------------------------------------------------------------------------------------------------


def test_element_not_in_list():
    computer = AEVComputer(("H", "C", "O"), dtype=F64)
    frames = [molecule("CH4"), molecule("H2O"), molecule("CH3CONH2")]  # N is atom 2 of structure 2
    assert frames[2].get_chemical_symbols()[2] == "N"
    for call in (computer.aev, computer.jacobian):
        with pytest.raises(PykinmlError, match=r"structure 2 atom 2 is N\b") as info:
            call(frames)
        assert "\n" not in str(info.value)
    with pytest.raises(PykinmlError, match="structure 0 atom 1 is Cl"):
        computer.aev(Atoms("HCl", positions=[[0, 0, 0], [1.3, 0, 0]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(computer):
    frames = mixed_batch() + [
        random_crystal(10, 11, TRICLINIC),
        random_crystal(8, 14, TRICLINIC, pbc=(1, 0, 1)),
    ]
    gpu = AEVComputer(params=PARAMS, dtype=F64, device="cuda")
    for got, expected in zip(gpu.aev(frames), computer.aev(frames)):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    small = [JACOBIAN_CASES["ethanol"], JACOBIAN_CASES["periodic_triclinic"]]
    for got, expected in zip(gpu.jacobian(small), computer.jacobian(small)):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_empty_structures_give_empty_arrays():
    computer = AEVComputer(("H", "C"), dtype="float64")
    assert computer.aev(Atoms()).shape == (0, computer.length)
    assert computer.aev([]) == []
    assert computer.jacobian(Atoms()).shape == (0, computer.length, 0, 3)
