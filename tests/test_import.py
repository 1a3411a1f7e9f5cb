"""pykinml-db import: every format keeps its arrays bit for bit, levels map as asked, duplicates merge."""

from __future__ import annotations

import io
import os
import sqlite3

import ase.io
import numpy as np
import pytest

from pykinml.db import open_engine, select_structures
from pykinml.units import BOHR_ANGSTROM, HARTREE_EV, KCAL_MOL_EV

from .builders import dump_tables, label, random_molecules, write_ase_db, write_extxyz, write_legacy_db


def _atoms_by_id(selection):
    return {int(i): k for k, i in enumerate(selection.ids)}


def test_extxyz_levels_map_info_and_array_keys(cli, db_url, tmp_path):
    """--level NAME=ENERGY_KEY,FORCES_KEY stores each level's labels exactly as ASE parsed them."""
    frames = random_molecules(12)
    label(frames, "dft", seed=1)
    label(frames, "xtb", seed=2)
    path = write_extxyz(tmp_path / "mols.extxyz", frames)
    result = cli("import", path, "--db", db_url, "--level", "dft=dft_energy,dft_forces",
                 "--level", "xtb=xtb_energy,xtb_forces")
    assert result.code == 0, result.err
    parsed = ase.io.read(path, ":")
    selection = select_structures(open_engine(db_url), levels=["dft", "xtb"])
    assert len(selection) == 12
    for k, atoms in enumerate(parsed):  # ids follow file order
        sl = selection.atoms_slice(k)
        assert np.array_equal(selection.numbers[sl], atoms.numbers)
        assert np.array_equal(selection.positions[sl], atoms.positions)
        for level in ("dft", "xtb"):
            assert selection.energies[level][k] == atoms.info[f"{level}_energy"]
            assert np.array_equal(selection.forces[level][sl], atoms.arrays[f"{level}_forces"])
        assert selection.names[k] == atoms.info["name"]


def test_calculator_results_become_the_default_level(cli, db_url, tmp_path):
    """Without --level, energy and forces that ASE reads as calculator results go to --level-name."""
    frames = random_molecules(5, seed=3)
    path = tmp_path / "calc.extxyz"
    with open(path, "w") as handle:
        for k, atoms in enumerate(frames):
            forces = np.full((len(atoms), 3), 0.5 * k)
            handle.write(f"{len(atoms)}\nenergy={-10.0 - k} Properties=species:S:1:pos:R:3:forces:R:3\n")
            for symbol, xyz, f in zip(atoms.get_chemical_symbols(), atoms.positions, forces):
                handle.write(f"{symbol} {xyz[0]:.10f} {xyz[1]:.10f} {xyz[2]:.10f} {f[0]} {f[1]} {f[2]}\n")
    assert cli("import", path, "--db", db_url, "--level-name", "pbe").code == 0
    selection = select_structures(open_engine(db_url), levels=["pbe"])
    assert selection.energies["pbe"].tolist() == [-10.0 - k for k in range(5)]
    assert np.array_equal(selection.forces["pbe"][selection.atoms_slice(3)], np.full((len(frames[3]), 3), 1.5))
    assert set(selection.names) == {"calc"}  # no name in the file: the file stem


@pytest.mark.parametrize(
    "units, force_units, energy_factor, force_factor",
    [
        ("hartree", None, HARTREE_EV, HARTREE_EV / BOHR_ANGSTROM),
        ("kcal/mol", None, KCAL_MOL_EV, KCAL_MOL_EV),
        ("hartree", "hartree/a", HARTREE_EV, HARTREE_EV),
    ],
)
def test_units_convert_to_ev_and_ev_per_angstrom(cli, tmp_path, units, force_units, energy_factor, force_factor):
    """--units hartree means Hartree and Hartree/Bohr; --force-units overrides the force unit."""
    frames = random_molecules(3)
    label(frames, "x", seed=4)
    path = write_extxyz(tmp_path / "ha.extxyz", frames)
    db = tmp_path / "u.db"
    args = ["import", path, "--db", db, "--level", "x=x_energy,x_forces", "--units", units]
    if force_units:
        args += ["--force-units", force_units]
    assert cli(*args).code == 0
    parsed = ase.io.read(path, 1)  # extxyz keeps 8 decimals of array values
    selection = select_structures(open_engine(db), levels=["x"])
    assert selection.energies["x"][1] == pytest.approx(parsed.info["x_energy"] * energy_factor, rel=1e-15)
    np.testing.assert_allclose(selection.forces["x"][selection.atoms_slice(1)],
                               parsed.arrays["x_forces"] * force_factor, rtol=1e-15)


def test_hartree_constants_are_codata_2018():
    """The one units module holds CODATA 2018 values."""
    assert HARTREE_EV == 27.211386245988
    assert BOHR_ANGSTROM == 0.529177210903
    assert HARTREE_EV / KCAL_MOL_EV == pytest.approx(627.5094740631, rel=1e-11)  # CODATA: Eh in kcal/mol


def test_ase_database_rows_keep_ids_names_and_results(cli, db_url, tmp_path):
    """An ase.db file imports with its calculator results as one level and its row ids as provenance."""
    frames = random_molecules(6, seed=5)
    label(frames, "dft", seed=6)
    path = write_ase_db(tmp_path / "asedb.db", frames)
    assert cli("import", path, "--db", db_url, "--level-name", "dft").code == 0
    selection = select_structures(open_engine(db_url), levels=["dft"])
    assert [selection.names[k] for k in range(6)] == [a.info["name"] for a in frames]
    for k, atoms in enumerate(frames):
        assert selection.energies["dft"][k] == atoms.info["dft_energy"]
        assert np.array_equal(selection.forces["dft"][selection.atoms_slice(k)], atoms.arrays["dft_forces"])
    mask = tmp_path / "mask.txt"
    mask.write_text("asedb/1 -1\nasedb/2 2\n")  # ASE row ids start at 1
    assert cli("split", "--db", db_url, "--name", "m", "--mask", mask, "--val-fraction", "0").code == 0
    test = select_structures(open_engine(db_url), split="m", subsets=["test"])
    assert np.array_equal(test.positions, frames[0].positions)


def test_legacy_file_keeps_every_row_temp_and_force(cli, db_url, tmp_path):
    """A PyKinML file imports every xyz row (temp 0 and NULL included), every fidelity, every force blob."""
    temps = [2000.0, 0.0, None, 300.0, 0.0, None]
    path = write_legacy_db(tmp_path / "C2H3.db", "C2H3", 5, 6, temps=temps)
    result = cli("import", path, "--db", db_url, "--level-names", "1=wB97X-D/6-311++G(d,p)")
    assert result.code == 0, result.err
    _assert_legacy_intact(db_url, path, {0: "fidelity_0", 1: "wB97X-D/6-311++G(d,p)"})


def _assert_legacy_intact(db_url: str, path, level_of: dict[int, str]) -> None:
    """Every xyz row, energy row and force array of the legacy file ``path`` is in the database, bit for bit."""
    con = sqlite3.connect(path)
    xyz = con.execute("SELECT id, temp, name, geom FROM xyz ORDER BY id").fetchall()
    energy = con.execute("SELECT xyz_id, fidelity, E, force FROM energy").fetchall()
    con.close()
    engine = open_engine(db_url)
    from sqlalchemy import select

    from pykinml.db.schema import provenance_table, source_table, structure_table

    with engine.connect() as conn:
        rows = conn.execute(
            select(provenance_table.c.source_index, structure_table.c.id, structure_table.c.temperature,
                   structure_table.c.name)
            .join(structure_table, structure_table.c.id == provenance_table.c.structure_id)
            .join(source_table, source_table.c.id == provenance_table.c.source_id)
            .where(source_table.c.path == os.path.abspath(path))  # as the importer records it (symlinks kept)
        ).all()
    structure_of = {index: (sid, temp, name) for index, sid, temp, name in rows}
    assert sorted(structure_of) == [row[0] for row in xyz]
    levels = sorted(set(level_of[f] for _, f, _, _ in energy))
    selection = select_structures(engine, optional_levels=levels)
    where = _atoms_by_id(selection)
    for xyz_id, temp, name, geom in xyz:
        sid, stored_temp, stored_name = structure_of[xyz_id]
        assert stored_temp == temp and stored_name == name
        positions = np.load(io.BytesIO(geom), allow_pickle=False)
        assert selection.positions[selection.atoms_slice(where[sid])].tobytes() == positions.astype("<f8").tobytes()
    for xyz_id, fidelity, e, force in energy:
        k = where[structure_of[xyz_id][0]]
        level = level_of[fidelity]
        assert selection.energies[level][k] == e
        if force is None:
            assert not selection.has_forces[level][k]
        else:
            expected = np.load(io.BytesIO(force), allow_pickle=False)
            assert selection.forces[level][selection.atoms_slice(k)].tobytes() == expected.astype("<f8").tobytes()
    rows_of_file = [where[sid] for sid, _, _ in structure_of.values()]
    assert sum(int(has[rows_of_file].sum()) for has in selection.has_energy.values()) == len(energy)


def test_pykinml_example_databases_import_intact(cli, tmp_path, shared_data):
    """All five example databases of PyKinML import with every structure, label and force array intact."""
    db = tmp_path / "all.db"
    paths = sorted((shared_data / "pykinml").glob("*.db"))
    assert len(paths) == 5
    assert cli("import", *paths, "--db", db).code == 0
    for path in paths:
        _assert_legacy_intact(str(db), path, {0: "fidelity_0", 1: "fidelity_1"})
    selection = select_structures(open_engine(db), optional_levels=["fidelity_0", "fidelity_1"])
    assert len(selection) == 4 * 14 + 2112


def test_same_geometry_in_two_files_is_one_structure_with_two_labels(cli, db_url, tmp_path):
    """Duplicate geometries (here: the same frames labelled at two levels in two files) merge into one row."""
    frames = random_molecules(4, seed=7)
    label(frames, "low", seed=8)
    label(frames, "high", seed=9)
    low = write_extxyz(tmp_path / "low.extxyz", frames)
    high = write_extxyz(tmp_path / "high.extxyz", frames)
    assert cli("import", low, "--db", db_url, "--level", "low=low_energy,low_forces").code == 0
    assert cli("import", high, "--db", db_url, "--level", "high=high_energy").code == 0
    selection = select_structures(open_engine(db_url), levels=["low", "high"])
    assert len(selection) == 4
    assert selection.has_forces["low"].all() and not selection.has_forces["high"].any()
    assert selection.energies["high"].tolist() == [a.info["high_energy"] for a in frames]


def test_reimporting_a_file_changes_nothing(cli, db_url, tmp_path):
    """A second import of the same file finds every structure and label already there."""
    frames = random_molecules(5, seed=10)
    label(frames, "a", seed=11)
    path = write_extxyz(tmp_path / "a.extxyz", frames)
    assert cli("import", path, "--db", db_url, "--level", "a=a_energy,a_forces").code == 0
    before = dump_tables(db_url)
    again = cli("import", path, "--db", db_url, "--level", "a=a_energy,a_forces")
    assert again.code == 0 and "0 new structures" in again.out and "5 identical labels" in again.out
    assert dump_tables(db_url) == before


def test_conflicting_label_is_an_error_unless_replace_or_skip(cli, db_url, tmp_path):
    """A different energy for a stored (structure, level) stops the import; --on-conflict decides otherwise."""
    frames = random_molecules(3, seed=12)
    label(frames, "a", seed=13)
    write_extxyz(tmp_path / "first.extxyz", frames)
    frames[1].info["a_energy"] += 1.0
    write_extxyz(tmp_path / "second.extxyz", frames)
    args = ["--db", db_url, "--level", "a=a_energy,a_forces"]
    assert cli("import", tmp_path / "first.extxyz", *args).code == 0
    before = dump_tables(db_url)
    result = cli("import", tmp_path / "second.extxyz", *args)
    assert result.code == 2
    assert "second.extxyz:" in result.err and "different label" in result.err and len(result.err.splitlines()) == 1
    assert dump_tables(db_url) == before
    assert cli("import", tmp_path / "second.extxyz", *args, "--on-conflict", "skip").code == 0
    assert select_structures(open_engine(db_url), levels=["a"]).energies["a"][1] == frames[1].info["a_energy"] - 1.0
    assert cli("import", tmp_path / "second.extxyz", *args, "--on-conflict", "replace", "--source-name", "s2").code == 0
    assert select_structures(open_engine(db_url), levels=["a"]).energies["a"][1] == frames[1].info["a_energy"]


def test_name_with_sql_in_it_is_stored_and_selected_back(cli, db_url, tmp_path):
    """Names go to SQL as bound parameters: a name that is an SQL injection attempt is just a name."""
    evil = "x'; DROP TABLE structure; --"
    frames = random_molecules(3, seed=14)
    label(frames, "a", seed=15)
    path = write_extxyz(tmp_path / "evil.extxyz", frames)
    assert cli("import", path, "--db", db_url, "--level", "a=a_energy", "--name", evil).code == 0
    engine = open_engine(db_url)
    assert len(select_structures(engine, levels=["a"], names=[evil])) == 3
    assert len(select_structures(engine, levels=["a"], names=["x'; DROP%"])) == 3
    assert len(select_structures(engine, levels=["a"], names=["x"])) == 0
    assert cli("info", "--db", db_url).code == 0


def test_periodic_cells_and_stress_are_stored(cli, db_url, tmp_path):
    """Cells, pbc flags and stress (Voigt in the file, 3×3 in the database) survive the import."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = bulk("Mo", "bcc", a=3.16, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.01, seed=1)
    voigt = np.array([0.1, 0.2, 0.3, 0.01, 0.02, 0.03])
    atoms.calc = SinglePointCalculator(atoms, energy=-40.0, forces=np.zeros((4, 3)), stress=voigt)
    path = tmp_path / "mo.extxyz"
    ase.io.write(path, atoms)
    assert cli("import", path, "--db", db_url, "--level-name", "pbe").code == 0
    selection = select_structures(open_engine(db_url), levels=["pbe"], stress=True)
    assert np.array_equal(selection.cells[0], atoms.cell.array)
    assert selection.pbc[0].all()
    expected = np.array([[0.1, 0.03, 0.02], [0.03, 0.2, 0.01], [0.02, 0.01, 0.3]])
    assert np.array_equal(selection.stress["pbe"][0], expected)
