"""Selections: required and optional levels with presence masks, name sets, split subsets, stable order."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest

from pykinml.db import open_engine, select_structures
from pykinml.errors import PykinmlError

from .builders import label, random_molecules, write_extxyz


@pytest.fixture
def multilevel_db(cli, db_url, tmp_path):
    """30 molecules: cheap level 'low' on all, expensive 'high' on every third, 'mid' (no forces) on the first 10."""
    frames = random_molecules(30, seed=21)
    label(frames, "low", seed=22)
    path = write_extxyz(tmp_path / "all.extxyz", frames)
    assert cli("import", path, "--db", db_url, "--level", "low=low_energy,low_forces").code == 0
    high = frames[::3]
    label(high, "high", seed=23)
    assert cli("import", write_extxyz(tmp_path / "high.extxyz", high), "--db", db_url,
               "--level", "high=high_energy,high_forces").code == 0
    mid = frames[:10]
    label(mid, "mid", seed=24, forces=False)
    assert cli("import", write_extxyz(tmp_path / "mid.extxyz", mid), "--db", db_url, "--level", "mid=mid_energy").code == 0
    return db_url, ase.io.read(path, ":"), frames


def test_optional_level_comes_with_a_presence_mask(multilevel_db):
    """low required, high optional: every structure, with high present on every third and NaN elsewhere."""
    db_url, parsed, frames = multilevel_db
    selection = select_structures(open_engine(db_url), levels=["low"], optional_levels=["high"])
    assert len(selection) == 30 and selection.levels == ("low", "high")
    assert np.all(np.diff(selection.ids) > 0)
    expected = np.arange(30) % 3 == 0
    assert np.array_equal(selection.has_energy["high"], expected)
    assert np.array_equal(selection.has_forces["high"], expected)
    assert np.isnan(selection.energies["high"][~expected]).all()
    assert selection.energies["high"][expected].tolist() == [f.info["high_energy"] for f in frames[::3]]
    for k in np.flatnonzero(~expected)[:3]:
        assert np.isnan(selection.forces["high"][selection.atoms_slice(k)]).all()
    for k in range(30):
        assert np.array_equal(selection.forces["low"][selection.atoms_slice(k)], parsed[k].arrays["low_forces"])
        assert np.array_equal(selection.positions[selection.atoms_slice(k)], parsed[k].positions)
    assert selection.offsets[-1] == sum(len(a) for a in parsed) == selection.numbers.size


def test_required_levels_keep_only_structures_that_have_them_all(multilevel_db):
    """Requiring high and mid keeps the structures labelled at both: 0, 3, 6, 9."""
    db_url, _, frames = multilevel_db
    engine = open_engine(db_url)
    selection = select_structures(engine, levels=["high", "mid"])
    assert len(selection) == 4
    assert selection.energies["mid"].tolist() == [frames[k].info["mid_energy"] for k in (0, 3, 6, 9)]
    assert not selection.has_forces["mid"].any()
    assert len(select_structures(engine, levels=["mid"], require_forces=True)) == 0
    assert len(select_structures(engine, levels=["low"], require_forces=True)) == 30


def test_name_sets_exact_and_like_patterns(multilevel_db):
    """Names select exactly; entries with % are LIKE patterns, case-sensitive on every backend."""
    db_url, _, _ = multilevel_db
    engine = open_engine(db_url)
    assert set(select_structures(engine, levels=["low"], names=["CH4"]).names) == {"CH4"}
    both = select_structures(engine, levels=["low"], names=["CH4", "H2O"])
    assert len(both) == 20 and set(both.names) == {"CH4", "H2O"}
    assert set(select_structures(engine, levels=["low"], names=["C%"]).names) == {"CH4", "C2H3N"}
    assert len(select_structures(engine, levels=["low"], names=["c%"])) == 0
    assert set(select_structures(engine, levels=["low"], names=["H2O", "%N"]).names) == {"H2O", "C2H3N"}


def test_split_subsets_restrict_the_selection(cli, multilevel_db):
    """With a stored split, each subset selects its own structures and the codes say which."""
    db_url, _, _ = multilevel_db
    assert cli("split", "--db", db_url, "--name", "s", "--fractions", "0.6", "0.2", "0.2", "--seed", "3").code == 0
    engine = open_engine(db_url)
    whole = select_structures(engine, levels=["low"], split="s")
    parts = {subset: select_structures(engine, levels=["low"], split="s", subsets=[subset]) for subset in
             ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [18, 6, 6]
    for code, subset in enumerate(("train", "val", "test")):
        assert np.array_equal(whole.ids[whole.subsets == code], parts[subset].ids)
    train_val = select_structures(engine, levels=["low"], split="s", subsets=["train", "val"])
    assert np.array_equal(train_val.ids, np.sort(np.concatenate([parts["train"].ids, parts["val"].ids])))


def test_empty_selection_has_empty_arrays(multilevel_db):
    """A name that matches nothing gives zero-length arrays of the right shapes."""
    db_url, _, _ = multilevel_db
    selection = select_structures(open_engine(db_url), levels=["low"], names=["nothing"])
    assert len(selection) == 0 and selection.positions.shape == (0, 3) and selection.offsets.tolist() == [0]


def test_unknown_level_and_split_are_named(multilevel_db):
    """Asking for a level or split that does not exist names it and lists what does."""
    db_url, _, _ = multilevel_db
    engine = open_engine(db_url)
    with pytest.raises(PykinmlError, match="level 'dft' is not in the database .levels: low, high, mid"):
        select_structures(engine, levels=["dft"])
    with pytest.raises(PykinmlError, match="split 'nope' is not in the database"):
        select_structures(engine, levels=["low"], split="nope")


def test_selection_round_trips_to_ase_atoms(multilevel_db):
    """Selection.to_atoms gives back the molecule with its id and name."""
    db_url, parsed, _ = multilevel_db
    selection = select_structures(open_engine(db_url), levels=["low"])
    atoms = selection.to_atoms(4)
    assert atoms.info["id"] == int(selection.ids[4]) and atoms.info["name"] == parsed[4].info["name"]
    assert np.array_equal(atoms.positions, parsed[4].positions)
