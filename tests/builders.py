"""Real input files for the tests: extxyz with several levels, ASE databases, original-PyKinML SQLite files."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import ase.db
import ase.io
import numpy as np
from ase import Atoms
from sqlalchemy import MetaData, create_engine, select

from pykinml.db.connection import resolve_url

MOLECULES = {"CH4": [6, 1, 1, 1, 1], "H2O": [8, 1, 1], "C2H3N": [6, 6, 1, 1, 1, 7]}


def random_molecules(n: int, seed: int = 0, names=("CH4", "H2O", "C2H3N")) -> list[Atoms]:
    """``n`` molecules cycling through ``names``, with random positions (Å) and ``info['name']``."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        name = names[k % len(names)]
        numbers = MOLECULES[name]
        atoms = Atoms(numbers=numbers, positions=rng.normal(scale=1.2, size=(len(numbers), 3)))
        atoms.info["name"] = name
        frames.append(atoms)
    return frames


def label(frames: list[Atoms], level: str, seed: int, forces: bool = True) -> None:
    """Attach ``info['<level>_energy']`` (eV) and ``arrays['<level>_forces']`` (eV/Å) with random values."""
    rng = np.random.default_rng(seed)
    for atoms in frames:
        atoms.info[f"{level}_energy"] = float(rng.normal(-1000.0, 50.0))
        if forces:
            atoms.arrays[f"{level}_forces"] = rng.normal(size=(len(atoms), 3))


def write_extxyz(path: Path, frames: list[Atoms]) -> Path:
    ase.io.write(path, frames, format="extxyz")
    return path


def write_ase_db(path: Path, frames: list[Atoms], level: str = "dft") -> Path:
    """An ASE database whose rows carry energy/forces as calculator results and the name as a key."""
    from ase.calculators.singlepoint import SinglePointCalculator

    with ase.db.connect(path, append=False) as database:
        for atoms in frames:
            copy = Atoms(numbers=atoms.numbers, positions=atoms.positions)
            copy.calc = SinglePointCalculator(
                copy, energy=atoms.info[f"{level}_energy"], forces=atoms.arrays[f"{level}_forces"]
            )
            database.write(copy, name=atoms.info["name"])
    return path


def np_blob(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


LEGACY_SCHEMA = """
CREATE TABLE meta (config TEXT NOT NULL, created_at TIMESTAMP DEFAULT (datetime('now','localtime')));
CREATE TABLE xyz (id integer PRIMARY KEY, calc text, calc_params array, temp real, name text, dist real,
                  geom array NOT NULL, created_at TIMESTAMP DEFAULT (datetime('now','localtime')));
CREATE TABLE energy (id integer PRIMARY KEY, fidelity integer, sample_set_id integer, calc text NOT NULL,
                     calc_params array, E real NOT NULL, force array, Hessian array, xyz_id integer NOT NULL,
                     created_at TIMESTAMP DEFAULT (datetime('now','localtime')),
                     FOREIGN KEY (xyz_id) REFERENCES xyz (id));
"""


def write_legacy_db(path: Path, formula: str, natoms: int, n: int, fidelities=(0, 1), seed: int = 0,
                    temps=None, geom_shape=None) -> Path:
    """A file in the original PyKinML schema: ``n`` geometries, labels at ``fidelities`` (fid 0 on all, others on half)."""
    rng = np.random.default_rng(seed)
    con = sqlite3.connect(path)
    con.executescript(LEGACY_SCHEMA)
    con.execute("INSERT INTO meta (config) VALUES (?)", (formula,))
    for k in range(1, n + 1):
        temp = temps[k - 1] if temps is not None else 2000.0
        geom = rng.normal(size=geom_shape or (natoms, 3))
        con.execute("INSERT INTO xyz (id, calc, temp, name, geom) VALUES (?, 'gaussian', ?, ?, ?)",
                    (k, temp, "111" if k % 2 else "222", np_blob(geom)))
        for fidelity in fidelities:
            if fidelity != fidelities[0] and k % 2 == 0:
                continue
            force = None if (fidelity == fidelities[0] and k == n) else np_blob(rng.normal(size=(natoms, 3)))
            con.execute("INSERT INTO energy (fidelity, sample_set_id, calc, E, force, xyz_id) "
                        "VALUES (?, 2, 'gaussian', ?, ?, ?)", (fidelity, float(rng.normal(-2000, 10)), force, k))
    con.commit()
    con.close()
    return path


def dump_tables(url: str) -> dict[str, list[tuple]]:
    """Every row of every table of a database, sorted, for 'nothing changed' checks."""
    engine = create_engine(resolve_url(url))
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        dump = {name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
                for name, table in metadata.tables.items()}
    engine.dispose()
    return dump


def random_clusters(n: int, natoms: int, seed: int = 0, symbols: str = "HCNO", spacing: float = 1.5) -> list[Atoms]:
    """``n`` clusters of ``natoms`` H/C/N/O atoms on a jittered grid (``spacing`` Å apart, so no overlaps)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(natoms ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), axis=-1).reshape(-1, 3) * spacing
    frames = []
    for _ in range(n):
        sites = grid[rng.choice(len(grid), natoms, replace=False)]
        atoms = Atoms(symbols=list(rng.choice(list(symbols), natoms)), positions=sites + rng.normal(0, 0.1, (natoms, 3)))
        atoms.info["name"] = "cluster"
        frames.append(atoms)
    return frames
