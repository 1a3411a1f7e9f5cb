"""Bad input: one line naming the file and line (or row id), exit code 2, and the database exactly as it was."""

from __future__ import annotations

import subprocess
import sys

import ase.db
import numpy as np
import pytest
from ase import Atoms

from .builders import dump_tables, label, random_molecules, write_extxyz, write_legacy_db

GOOD = "3\nProperties=species:S:1:pos:R:3 e=-1.0\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"


def _seeded_db(cli, db_url, tmp_path) -> dict:
    """A database holding one good file, and its dump."""
    good = tmp_path / "good.extxyz"
    good.write_text(GOOD)
    assert cli("import", good, "--db", db_url, "--level", "a=e").code == 0
    return dump_tables(db_url)


def _assert_refused(cli, db_url, before, path, *args, expect: str):
    result = cli("import", path, "--db", db_url, *args)
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert expect in lines[0], lines[0]
    assert dump_tables(db_url) == before
    return lines[0]


@pytest.mark.parametrize(
    "text, expect",
    [
        (GOOD + "3\n\nO 0 0 0\nH 0.96 0\nH 0 1 0\n", "bad.xyz:9: expected a symbol and 3 coordinates"),
        (GOOD + "3\n\nO 0 0 0\nXx 0.96 0 0\nH 0 1 0\n", "bad.xyz:9: unknown element symbol 'Xx'"),
        (GOOD + "3\n\nO 0 0 0\nH 0.96 0 0\n", "bad.xyz:6: the frame declares 3 atoms"),  # truncated
        (GOOD + "x\n\nO 0 0 0\n", "bad.xyz:6: expected an atom count"),
    ],
)
def test_malformed_xyz_names_the_line(cli, db_url, tmp_path, text, expect):
    """Malformed xyz: the message names the file and the line at fault; nothing is written."""
    before = _seeded_db(cli, db_url, tmp_path)
    path = tmp_path / "bad.xyz"
    path.write_text(text.replace("Properties=species:S:1:pos:R:3 e=-1.0", "e=-1.0"))
    _assert_refused(cli, db_url, before, path, "--level", "a=e", expect=expect)


@pytest.mark.parametrize("value, what", [("nan", "energy"), ("inf", "energy"), ("nan", "forces")])
def test_non_finite_labels_are_refused(cli, db_url, tmp_path, value, what):
    """A NaN or infinite energy or force stops the import at that frame."""
    before = _seeded_db(cli, db_url, tmp_path)
    frames = random_molecules(4)
    label(frames, "a", seed=1)
    path = write_extxyz(tmp_path / "nan.extxyz", frames)
    lines = path.read_text().splitlines()
    start = 2 * 2 + len(frames[0]) + len(frames[1])  # 0-based index of frame 2's count line
    if what == "energy":
        lines[start + 1] = lines[start + 1].replace(f"a_energy={frames[2].info['a_energy']!r}", f"a_energy={value}")
        assert value in lines[start + 1]
    else:
        tokens = lines[start + 3].split()
        tokens[-1] = value
        lines[start + 3] = " ".join(tokens)
    path.write_text("\n".join(lines) + "\n")
    message = _assert_refused(cli, db_url, before, path, "--level", "a=a_energy,a_forces",
                              expect=f"nan.extxyz:{start + 1}:")
    assert "NaN or infinite" in message and what in message


def test_forces_of_the_wrong_shape_name_the_row(cli, db_url, tmp_path):
    """Forces whose shape does not match the atoms: the ASE db row id is named."""
    before = _seeded_db(cli, db_url, tmp_path)
    path = tmp_path / "shape.db"
    with ase.db.connect(path) as database:
        for k in range(3):
            atoms = Atoms("H2O", positions=np.random.default_rng(k).normal(size=(3, 3)))
            database.write(atoms, e=-1.0 * k, data={"f": np.zeros((2 if k == 1 else 3, 3))})
    message = _assert_refused(cli, db_url, before, path, "--level", "a=e,f", expect="shape.db: row id 2")
    assert "(2, 3)" in message and "(3, 3)" in message


def test_level_key_missing_from_some_frames(cli, db_url, tmp_path):
    """A --level key present in the first frames but missing later names the frame's line."""
    before = _seeded_db(cli, db_url, tmp_path)
    frames = random_molecules(3)
    label(frames, "a", seed=2)
    del frames[2].info["a_energy"]
    path = write_extxyz(tmp_path / "missing.extxyz", frames)
    line = 2 * 2 + len(frames[0]) + len(frames[1]) + 1
    _assert_refused(cli, db_url, before, path, "--level", "a=a_energy",
                    expect=f"missing.extxyz:{line}: key 'a_energy' of level 'a' is missing")


def test_calculator_energy_missing_from_some_frames(cli, db_url, tmp_path):
    """Without --level, a frame that lacks the energy the first frame had is refused."""
    before = _seeded_db(cli, db_url, tmp_path)
    path = tmp_path / "calc.extxyz"
    path.write_text(GOOD.replace("e=", "energy=") + GOOD.replace(" e=-1.0", ""))
    _assert_refused(cli, db_url, before, path, expect="calc.extxyz:6: this frame lacks energy")


def test_legacy_file_whose_name_is_not_a_formula(cli, db_url, tmp_path):
    """A PyKinML file must be named after its formula (or get --formula)."""
    before = _seeded_db(cli, db_url, tmp_path)
    path = write_legacy_db(tmp_path / "run2.db", "C2H2", 4, 3)
    _assert_refused(cli, db_url, before, path, expect="run2.db: the file name 'run2' is not a formula")
    assert cli("import", path, "--db", db_url, "--formula", "C2H2").code == 0


def test_legacy_geometry_that_does_not_match_the_formula(cli, db_url, tmp_path):
    """A legacy geom with another atom count than the formula names the xyz row id."""
    before = _seeded_db(cli, db_url, tmp_path)
    path = write_legacy_db(tmp_path / "C2H3.db", "C2H3", 5, 3, geom_shape=(4, 3))
    _assert_refused(cli, db_url, before, path, expect="C2H3.db: xyz row id 1: geom has shape (4, 3)")


def test_unknown_element_in_legacy_formula(cli, tmp_path):
    """A formula with a symbol that is no element is refused."""
    path = write_legacy_db(tmp_path / "Xx2.db", "Xx2", 2, 1)
    result = cli("import", path, "--db", tmp_path / "new.db")
    assert result.code == 2 and "unknown element symbol 'Xx'" in result.err


def test_failed_import_into_a_new_sqlite_file_leaves_no_file(cli, tmp_path):
    """When the very first import fails, the SQLite file it would have created does not appear."""
    bad = tmp_path / "bad.xyz"
    bad.write_text("2\n\nC 0 0 0\nQq 1 0 0\n")
    result = cli("import", bad, "--db", tmp_path / "new.db")
    assert result.code == 2 and not (tmp_path / "new.db").exists()


def test_good_files_before_a_bad_one_stay_imported(cli, db_url, tmp_path):
    """Each file is its own transaction: the good first file is kept, the bad second file leaves no trace."""
    good = tmp_path / "good.extxyz"
    good.write_text(GOOD)
    bad = tmp_path / "bad.xyz"
    bad.write_text(GOOD + "1\n\nZz 0 0 0\n")
    result = cli("import", good, bad, "--db", db_url, "--level", "a=e")
    assert result.code == 2 and "bad.xyz:8: unknown element symbol 'Zz'" in result.err
    info = cli("info", "--db", db_url, "--json")
    assert '"structures": 1' in info.out


def test_unreachable_database_url(cli, tmp_path):
    """A PostgreSQL URL nobody answers: one line naming the URL (without its password)."""
    path = tmp_path / "good.extxyz"
    path.write_text(GOOD)
    result = cli("import", path, "--db", "postgresql://user:secret@127.0.0.1:1/db", "--level", "a=e")
    assert result.code == 2
    assert "cannot connect to postgresql" in result.err and "127.0.0.1:1/db" in result.err
    assert "secret" not in result.err and len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--level", "=e"], "--level '=e': expected NAME=ENERGY_KEY"),
        (["--level-names", "one=x"], "--level-names 'one=x'"),
        (["--units", "furlongs"], "invalid choice"),
    ],
)
def test_bad_options_are_named(cli, tmp_path, args, expect):
    """A malformed option is named in the error, exit code 2."""
    path = tmp_path / "good.extxyz"
    path.write_text(GOOD)
    result = cli("import", path, "--db", tmp_path / "x.db", *args)
    assert result.code == 2 and expect in result.err


def test_console_script_exit_code_and_message(tmp_path):
    """The installed pykinml-db prints one line on stderr and exits 2 (a real subprocess)."""
    path = tmp_path / "bad.xyz"
    path.write_text("1\n\nQq 0 0 0\n")
    run = subprocess.run([sys.executable, "-m", "pykinml.cli.db", "import", str(path), "--db", str(tmp_path / "d.db")],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip() == f"pykinml-db: error: {path}:3: unknown element symbol 'Qq'"
