"""``pykinml-db export``: a selection as extxyz with every level's labels, for ``pykinml-predict`` references."""

from __future__ import annotations

from collections.abc import Sequence

import ase.io
import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine

from ..errors import PykinmlError
from ..files import output_directory, write_with
from .query import select_structures
from .schema import level_table


def all_levels(engine: Engine) -> list[str]:
    """Every level name in the database, in creation order."""
    with engine.connect() as conn:
        return list(conn.execute(select(level_table.c.name).order_by(level_table.c.id)).scalars())


def export_extxyz(
    engine: Engine,
    path: str,
    levels: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    split: str | None = None,
    subset: str | None = None,
) -> int:
    """Write the selected structures with ``info['<level>_energy']`` and ``arrays['<level>_forces']``.

    Structures need a label at one of ``levels`` at least (all levels by default); ``info['id']`` is
    the structure id and ``info['name']`` its name. Written to a temporary file, then renamed.
    """
    output_directory(path)  # fail before the selection if the file cannot be written
    levels = list(levels) if levels else all_levels(engine)
    if not levels:
        raise PykinmlError("the database has no levels to export")
    selection = select_structures(
        engine, optional_levels=levels, names=names, split=split, subsets=[subset] if subset else None, stress=True
    )
    keep = np.zeros(len(selection), bool)
    for level in levels:
        keep |= selection.has_energy[level]
    def write(handle) -> None:
        for k in np.flatnonzero(keep).tolist():
            atoms = selection.to_atoms(k)
            atoms_slice = selection.atoms_slice(k)
            for level in levels:
                if not selection.has_energy[level][k]:
                    continue
                atoms.info[f"{level}_energy"] = float(selection.energies[level][k])
                if selection.has_forces[level][k]:
                    atoms.arrays[f"{level}_forces"] = selection.forces[level][atoms_slice].copy()
                if selection.has_stress[level][k]:
                    atoms.info[f"{level}_stress"] = selection.stress[level][k].copy()
            ase.io.write(handle, atoms, format="extxyz")

    write_with(path, write)
    return int(keep.sum())
