"""The one-pass xyz / extxyz reader against ``ase.io.read``: the same Atoms (numbers, positions, cell, pbc, info,
arrays, calculator results, constraints) from files with every kind of column and header ASE writes."""

from __future__ import annotations

import gzip

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from pykinml.db.readers.ase_files import iread_atoms
from pykinml.db.readers.xyz_stream import XYZFrameError, iread_xyz
from pykinml.errors import PykinmlError


def labelled(atoms: Atoms, seed: int, **info) -> Atoms:
    """``atoms`` moved a little, with an energy, forces and the given info keys."""
    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    atoms.info.update(info)
    results = {"energy": float(rng.normal()), "forces": rng.normal(size=(len(atoms), 3))}
    if atoms.pbc.any():
        results["stress"] = rng.normal(size=6)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def trajectories() -> dict[str, list[Atoms]]:
    """Frame lists as users have them: geometries only, labelled molecules, periodic cells, extra columns."""
    ethanol = molecule("CH3CH2OH")
    water = molecule("H2O")
    tagged = water.copy()
    tagged.set_tags([1, 2, 3])
    tagged.set_initial_charges([-0.8, 0.4, 0.4])
    tagged.new_array("site", np.array(["O1", "H1", "H2"]))
    tagged.new_array("dipole", np.arange(9.0).reshape(3, 3))
    fixed = ethanol.copy()
    fixed.set_constraint(FixAtoms(indices=[0, 1]))
    return {
        "geometries": [ethanol.copy() for _ in range(3)] + [Atoms("C5H5", positions=np.random.default_rng(0).normal(size=(10, 3)))],
        "labelled": [labelled(ethanol, k, name=f"md-{k}", temperature=300.0 + k, step=k, converged=k % 2 == 0,
                              dipole=np.array([0.1, 0.2, k])) for k in range(4)] + [labelled(water, 9)],
        "periodic": [labelled(bulk("Cu", "fcc", a=3.6, cubic=True), k, config="bulk") for k in range(2)]
        + [labelled(bulk("Si", "diamond", a=5.43), 5)],
        "extra columns": [tagged, labelled(tagged, 1), tagged],
        "constraints": [fixed, ethanol],
    }


def assert_same_atoms(ours: Atoms, theirs: Atoms) -> None:
    assert np.array_equal(ours.numbers, theirs.numbers)
    assert np.array_equal(ours.positions, theirs.positions)
    assert np.array_equal(ours.cell.array, theirs.cell.array)
    assert np.array_equal(ours.pbc, theirs.pbc)
    assert ours.info.keys() == theirs.info.keys()
    for key, value in theirs.info.items():
        assert type(ours.info[key]) is type(value), key
        assert np.array_equal(ours.info[key], value), key
    assert ours.arrays.keys() == theirs.arrays.keys()
    for key, value in theirs.arrays.items():
        assert ours.arrays[key].dtype == value.dtype, key
        assert np.array_equal(ours.arrays[key], value), key
    assert (ours.calc is None) == (theirs.calc is None)
    if theirs.calc is not None:
        assert ours.calc.results.keys() == theirs.calc.results.keys()
        for key, value in theirs.calc.results.items():
            assert np.array_equal(ours.calc.results[key], value), key
    assert repr(ours.constraints) == repr(theirs.constraints)


@pytest.mark.parametrize("kind", list(trajectories()))
def test_frames_equal_what_ase_reads(tmp_path, kind):
    path = tmp_path / "frames.extxyz"
    ase.io.write(path, trajectories()[kind], format="extxyz")
    expected = ase.io.read(path, ":")
    with open(path) as handle:
        frames = list(iread_xyz(handle))
    assert len(frames) == len(expected)
    line = 1
    for (atoms, start), theirs in zip(frames, expected):
        assert start == line
        assert_same_atoms(atoms, theirs)
        line += len(theirs) + 2


def test_plain_xyz_comments_symbols_and_gzip_equal_what_ase_reads(tmp_path):
    text = (
        "3\nwater from a crystal search, step 1\no 0.0 0.0 0.1173\nh 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"
        "3\n\nO 0.0 0.0 0.12\nH 0.0 0.76 -0.47\nH 0.0 -0.76 -0.47\n"
        "2\nenergy=-1.5 pbc=\"F F F\"\nH 0 0 0 0.25\nH 0 0 0.74 -0.25\n"  # a fifth column beyond the Properties
        "2\nsame header again: cached\nC 0 0 0\nO 0 0 1.13\n"
    )
    plain, packed = tmp_path / "mixed.xyz", tmp_path / "mixed.xyz.gz"
    plain.write_text(text)
    with gzip.open(packed, "wt") as handle:
        handle.write(text)
    expected = ase.io.read(plain, ":")
    for path in (plain, packed):
        frames = list(iread_atoms(str(path)))
        assert [where for _, where in frames] == [f"{path}:{line}" for line in (1, 6, 11, 15)]
        for (atoms, _), theirs in zip(frames, expected, strict=True):
            assert_same_atoms(atoms, theirs)


def test_repeated_headers_give_each_frame_its_own_info(tmp_path):
    frames = [labelled(molecule("H2O"), 0, moment=np.array([1.0, 2.0, 3.0])) for _ in range(3)]
    path = tmp_path / "same.extxyz"
    ase.io.write(path, frames, format="extxyz")
    with open(path) as handle:
        first, second, _ = (atoms for atoms, _ in iread_xyz(handle))
    first.info["moment"][0] = 99.0
    first.calc.results["forces"][0, 0] = 99.0
    assert second.info["moment"][0] == 1.0 and second.calc.results["forces"][0, 0] != 99.0


def test_cell_vectors_as_vec_lines_are_read_by_ase(tmp_path):
    path = tmp_path / "vec.xyz"
    path.write_text("2\ncell\nH 0 0 0\nH 0 0 0.74\nVEC1 4.0 0.0 0.0\nVEC2 0.0 4.0 0.0\nVEC3 0.0 0.0 4.0\n"
                    "1\nnext\nHe 1 1 1\n")
    expected = ase.io.read(path, ":")
    with open(path) as handle:
        frames = list(iread_xyz(handle))
    assert [line for _, line in frames] == [1, 8]
    for (atoms, _), theirs in zip(frames, expected, strict=True):
        assert_same_atoms(atoms, theirs)


@pytest.mark.parametrize("text, line, message", [
    ("2\nok\nH 0 0 0\nH 0 0 1\nthree\nbad\n", 5, "expected an atom count, got 'three'"),
    ("2\nok\nH 0 0 0\nH 0 0 1\n3\nshort\nH 0 0 0\n", 5, "the frame declares 3 atoms but the file ends"),
    ("2\nok\nH 0 0 0\nQq 0 0 1\n", 4, "unknown element symbol 'Qq'"),
    ("2\nok\nH 0 0 0\nH 0 zero 1\n", 4, "coordinates are not numbers"),
])
def test_a_bad_frame_is_one_line_naming_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.xyz"
    path.write_text(text)
    with open(path) as handle, pytest.raises(XYZFrameError):
        list(iread_xyz(handle))
    with pytest.raises(PykinmlError) as error:
        list(iread_atoms(str(path)))
    assert str(error.value).startswith(f"{path}:{line}: {message}")
    assert "\n" not in str(error.value)
