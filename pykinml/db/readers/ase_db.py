"""Frames from an ASE database (``ase.db``: SQLite ``.db`` or ``.json``); index = the ASE row id."""

from __future__ import annotations

from collections.abc import Iterator

import ase.db

from ...errors import PykinmlError
from ..frames import Frame
from .ase_files import frame_from_atoms
from .labels import LabelExtractor
from .xyz_stream import first_line


def read_ase_db(path: str, labels: LabelExtractor, name: str | None, default_name: str) -> Iterator[Frame]:
    """Yield one frame per row of the ASE database at ``path``, in row id order."""
    try:
        database = ase.db.connect(path, create_indices=False, use_lock_file=False)
        rows = database.select(sort="id")
        for row in rows:
            where = f"{path}: row id {row.id}"
            atoms = row.toatoms()
            info = {**row.key_value_pairs, **row.get("data", {})}
            results = {key: row.get(key) for key in ("energy", "forces", "stress") if row.get(key) is not None}
            yield frame_from_atoms(atoms, info, {**info, **atoms.arrays}, results, row.id, where, labels, name,
                                   default_name)
    except PykinmlError:
        raise
    except Exception as exc:
        raise PykinmlError(f"{path}: not a readable ASE database: {first_line(exc)}") from None
