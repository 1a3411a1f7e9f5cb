"""Frames from the original PyKinML SQLite files (tables ``xyz``, ``energy``, ``meta``; ``np.save`` blobs).

The species order comes from the formula in the file name (``C5H5.db``: five C, then five H);
``energy.fidelity`` n becomes level ``fidelity_<n>`` unless a name is given; ``xyz.temp`` is kept,
NULL included; index = ``xyz.id``.
"""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import Iterator

import numpy as np
from ase.data import atomic_numbers

from ...errors import PykinmlError
from ..frames import Frame, LevelLabel
from .labels import Units

_FORMULA = re.compile(r"([A-Z][a-z]?)(\d*)")


def formula_numbers(formula: str, where: str) -> np.ndarray:
    """Atomic numbers in formula order: ``C5H5`` → [6]*5 + [1]*5; a one-line error if it is not a formula."""
    parts = _FORMULA.findall(formula)
    if not formula or "".join(symbol + count for symbol, count in parts) != formula:
        raise PykinmlError(f"{where}: the file name {formula!r} is not a formula like C5H5 (pass --formula)")
    numbers = []
    for symbol, count in parts:
        if symbol not in atomic_numbers:
            raise PykinmlError(f"{where}: unknown element symbol {symbol!r} in formula {formula!r}")
        numbers += [atomic_numbers[symbol]] * (int(count) if count else 1)
    return np.array(numbers, dtype=np.int64)


def _array(blob, where: str, what: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(blob), allow_pickle=False)
    except Exception as exc:
        raise PykinmlError(f"{where}: {what} is not a numpy array blob ({exc})") from None


def level_name_of(fidelity: int, names: dict[int, str]) -> str:
    """The level a legacy fidelity number maps to."""
    return names.get(fidelity, f"fidelity_{fidelity}")


def read_legacy_fidelities(path: str) -> list[int]:
    """The distinct ``energy.fidelity`` numbers of a legacy file."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return [row[0] for row in con.execute("SELECT DISTINCT fidelity FROM energy ORDER BY fidelity")]


def read_legacy(
    path: str, formula: str, level_names: dict[int, str], units: Units, name: str | None = None
) -> Iterator[Frame]:
    """Yield one frame per ``xyz`` row with the labels of its ``energy`` rows, in ``xyz.id`` order."""
    numbers = formula_numbers(formula, path)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        orphans = con.execute(
            "SELECT e.id, e.xyz_id FROM energy e LEFT JOIN xyz x ON x.id = e.xyz_id WHERE x.id IS NULL LIMIT 1"
        ).fetchone()
        if orphans:
            raise PykinmlError(f"{path}: energy row id {orphans[0]} refers to xyz id {orphans[1]}, which does not exist")
        labels: dict[int, dict[str, LevelLabel]] = {}
        rows = con.execute("SELECT id, fidelity, E, force, xyz_id FROM energy ORDER BY xyz_id, id")
        for energy_id, fidelity, energy, force, xyz_id in rows:
            where = f"{path}: energy row id {energy_id}"
            if fidelity is None:
                raise PykinmlError(f"{where}: fidelity is NULL")
            level = level_name_of(int(fidelity), level_names)
            forces = None if force is None else _array(force, where, "force") * units.forces
            label = LevelLabel(energy=float(energy) * units.energy, forces=forces)
            per_level = labels.setdefault(xyz_id, {})
            if level in per_level:
                earlier = per_level[level]
                same_forces = (earlier.forces is None and forces is None) or (
                    earlier.forces is not None and forces is not None and np.array_equal(earlier.forces, forces)
                )
                if earlier.energy != label.energy or not same_forces:
                    raise PykinmlError(f"{where}: a second, different label for xyz id {xyz_id} at fidelity {fidelity}")
                continue
            per_level[level] = label
        for xyz_id, temp, tag, geom in con.execute("SELECT id, temp, name, geom FROM xyz ORDER BY id"):
            where = f"{path}: xyz row id {xyz_id}"
            positions = _array(geom, where, "geom")
            if positions.shape != (len(numbers), 3):
                raise PykinmlError(
                    f"{where}: geom has shape {positions.shape} but formula {formula} has {len(numbers)} atoms"
                )
            yield Frame(
                numbers=numbers,
                positions=positions,
                name=name or (None if tag is None else str(tag)),
                temperature=None if temp is None else float(temp),
                source_index=int(xyz_id),
                location=where,
                labels=labels.get(xyz_id, {}),
            )
    except sqlite3.Error as exc:
        raise PykinmlError(f"{path}: not a readable PyKinML database: {exc}") from None
    finally:
        con.close()
