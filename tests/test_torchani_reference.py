"""The test-only AEV references agree: TorchANI 2.9 (rescaled) vs the direct numpy loops, and numpy vs ASE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from .torchani_reference import (
    aev_length,
    original_constants,
    reference_aev_numpy,
    torchani_aev,
    torchani_preset_aev,
    torchani_preset_constants,
)

HCNO = original_constants(("H", "C", "N", "O"))
TRICLINIC = np.array([[4.0, 0.0, 0.0], [0.7, 4.5, 0.0], [0.3, -0.4, 5.0]])


@pytest.fixture(scope="module")
def torchani():
    return pytest.importorskip("torchani")


def random_structure(seed: int = 0):
    rng = np.random.default_rng(seed)
    return ["H", "C", "O", "H", "N"], rng.uniform(-1.0, 6.0, size=(5, 3))  # some atoms outside the cell


def test_original_constants():
    c = original_constants()
    assert np.allclose(c["radial_shifts"][[0, -1]], [0.1625, 5.0375])
    assert math.isclose(c["radial_eta"], 1 / (2 / 3 * 0.325) ** 2)
    assert np.allclose(c["angular_shifts"][[0, -1]], [0.2375, 3.5625])
    assert c["angle_sections"][0] == 0.0 and c["angle_sections"][-1] == math.pi
    assert aev_length(4, 16, 8, 8) == 704


@pytest.mark.parametrize("pbc", [True, (True, False, True), (False, False, True)])
def test_numpy_images_match_ase_neighbor_list(pbc):
    """With eta = 0 the first radial feature is sum_j f_c(r_ij): compare with ASE's periodic neighbour list."""
    symbols, positions = random_structure()
    got = reference_aev_numpy(symbols, positions, **dict(HCNO, radial_eta=0.0), cell=TRICLINIC, pbc=pbc)
    first = got[:, :64].reshape(5, 4, 16)[:, :, 0].sum(axis=1)
    i, d = neighbor_list("id", Atoms(symbols, positions=positions, cell=TRICLINIC, pbc=pbc), 5.2)
    expected = np.bincount(i, weights=0.5 * np.cos(np.pi * d / 5.2) + 0.5, minlength=5)
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["CH3OH", "CH3CH2OH", "CH3CONH2"])
def test_torchani_matches_numpy_molecules(torchani, name):
    m = molecule(name)
    ref = reference_aev_numpy(m.get_chemical_symbols(), m.positions, **HCNO)
    got = torchani_aev(m.get_chemical_symbols(), m.positions, **HCNO)
    assert got.shape == ref.shape == (len(m), 704) and got.dtype == np.float64
    assert ref.max() > 1.0
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_torchani_matches_numpy_element_order_and_cutoffs(torchani):
    m = molecule("CH3CH2OH")
    for consts in (
        dict(HCNO, elements=("O", "N", "C", "H")),
        dict(HCNO, rc_ang=5.2),  # equal cutoffs: two TorchANI computers
        dict(HCNO, rc_ang=6.0),
    ):
        ref = reference_aev_numpy(m.get_chemical_symbols(), m.positions, **consts)
        got = torchani_aev(m.get_chemical_symbols(), m.positions, **consts)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_torchani_matches_numpy_periodic(torchani):
    symbols, positions = random_structure()
    ref = reference_aev_numpy(symbols, positions, **HCNO, cell=TRICLINIC, pbc=True)
    got = torchani_aev(symbols, positions, **HCNO, cell=TRICLINIC, pbc=True)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    diamond = bulk("C", "diamond", a=3.57)  # dense: many images, images of the atom itself
    args = (diamond.get_chemical_symbols(), diamond.positions)
    cell = np.array(diamond.cell)
    ref = reference_aev_numpy(*args, **HCNO, cell=cell, pbc=True)
    np.testing.assert_allclose(torchani_aev(*args, **HCNO, cell=cell, pbc=True), ref, rtol=0, atol=1e-12)


def test_torchani_refusals(torchani):
    m = molecule("CH3OH")
    with pytest.raises(ValueError, match="beta"):
        torchani_aev(m.get_chemical_symbols(), m.positions, **dict(HCNO, beta=0.9))
    with pytest.raises(NotImplementedError):
        torchani_aev(m.get_chemical_symbols(), m.positions, **HCNO, cell=TRICLINIC, pbc=(True, False, True))


def test_torchani_presets(torchani):
    c1, c2 = torchani_preset_constants("ani1x"), torchani_preset_constants("ani2x")
    assert c1["elements"] == ("H", "C", "N", "O")
    assert c2["elements"] == ("H", "C", "N", "O", "S", "F", "Cl")
    assert (c1["rc_rad"], c1["rc_ang"], c1["radial_eta"], c1["angular_eta"], c1["zeta"]) == (
        5.2,
        3.5,
        16.0,
        8.0,
        32.0,
    )
    assert (c2["rc_rad"], c2["rc_ang"], c2["radial_eta"], c2["angular_eta"], c2["zeta"]) == (
        5.1,
        3.5,
        19.7,
        12.5,
        14.1,
    )
    np.testing.assert_allclose(
        c1["radial_shifts"], 0.9 + np.arange(16) * (5.2 - 0.9) / 16, rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(c1["angular_shifts"], [0.9, 1.55, 2.2, 2.85], rtol=0, atol=1e-15)
    np.testing.assert_allclose(
        c1["angle_sections"], math.pi / 16 + np.arange(8) * math.pi / 8, rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(
        c2["radial_shifts"], 0.8 + np.arange(16) * (5.1 - 0.8) / 16, rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(c2["angular_shifts"], 0.8 + np.arange(8) * (3.5 - 0.8) / 8, rtol=0, atol=1e-15)
    np.testing.assert_allclose(
        c2["angle_sections"], math.pi / 8 + np.arange(4) * math.pi / 4, rtol=0, atol=1e-15
    )

    m = molecule("CH3CH2OH")
    for name, consts, dim in (("ani1x", c1, 384), ("ani2x", c2, 1008)):
        preset = torchani_preset_aev(name, m.get_chemical_symbols(), m.positions)
        assert preset.shape == (len(m), dim)
        radial_len = len(consts["elements"]) * 16
        ours = reference_aev_numpy(m.get_chemical_symbols(), m.positions, **consts)
        # TorchANI's own convention: 0.25 x our radial terms, 2 x our angular terms
        np.testing.assert_allclose(preset[:, :radial_len], 0.25 * ours[:, :radial_len], rtol=0, atol=1e-12)
        np.testing.assert_allclose(preset[:, radial_len:], 2.0 * ours[:, radial_len:], rtol=0, atol=1e-12)
        rounded = torchani_preset_aev(name, m.get_chemical_symbols(), m.positions, exact_constants=False)
        np.testing.assert_allclose(rounded, preset, rtol=0, atol=1e-5)  # float32-rounded constants
