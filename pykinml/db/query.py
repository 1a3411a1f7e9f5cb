"""Selections: the structures a run trains on, as numpy arrays in a stable order (by structure id).

A selection keeps structures that carry a label at every *required* level, adds *optional* levels
with presence masks (multi-fidelity: the expensive level is usually optional), and can be restricted
to a name set (exact names, or SQL LIKE patterns: entries containing ``%``) and to subsets of a
stored split. Rows are fetched in bulk and copied chunk by chunk into preallocated arrays, so peak
memory stays close to the arrays' own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection, Engine

from ..errors import PykinmlError
from .bulk import fetch_chunks
from .schema import (
    SUBSET_CODE,
    SUBSETS,
    label_table,
    level_table,
    split_assignment_table,
    split_table,
    structure_table,
)

FETCH_CHUNK = 5000


def ragged_rows(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ranges start..start+count−1 (e.g. the atoms of chosen structures), without a loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    return np.arange(total, dtype=np.int64) + np.repeat(np.asarray(starts, np.int64) - (np.cumsum(counts) - counts), counts)


@dataclass
class Selection:
    """Structures and labels as ragged arrays: per-atom arrays are concatenated, ``offsets`` delimit structures.

    Energies are eV, forces eV/Å, stress eV/Å³; a missing label is NaN and False in its mask.
    """

    ids: np.ndarray  # (n,) int64 structure ids, ascending
    natoms: np.ndarray  # (n,) int64
    offsets: np.ndarray  # (n + 1,) int64: atoms of structure k are offsets[k]:offsets[k + 1]
    numbers: np.ndarray  # (total atoms,) int64
    positions: np.ndarray  # (total atoms, 3) float64, Å
    cells: np.ndarray  # (n, 3, 3) float64, zeros where a structure has no cell
    pbc: np.ndarray  # (n, 3) bool
    names: np.ndarray  # (n,) object (str or None)
    levels: tuple[str, ...]  # required levels first, then optional ones
    energies: dict[str, np.ndarray] = field(default_factory=dict)  # level -> (n,)
    has_energy: dict[str, np.ndarray] = field(default_factory=dict)  # level -> (n,) bool
    forces: dict[str, np.ndarray] = field(default_factory=dict)  # level -> (total atoms, 3)
    has_forces: dict[str, np.ndarray] = field(default_factory=dict)  # level -> (n,) bool
    stress: dict[str, np.ndarray] = field(default_factory=dict)  # level -> (n, 3, 3), when asked for
    has_stress: dict[str, np.ndarray] = field(default_factory=dict)
    subsets: np.ndarray | None = None  # (n,) int8 codes 0 train, 1 val, 2 test when a split was given

    def __len__(self) -> int:
        return int(self.ids.size)

    def geometry_slice(self, start: int, stop: int) -> Selection:
        """Structures start..stop-1 with their geometry only (no labels), offsets starting at 0."""
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return Selection(
            ids=self.ids[start:stop], natoms=self.natoms[start:stop], offsets=self.offsets[start : stop + 1] - a,
            numbers=self.numbers[a:b], positions=self.positions[a:b], cells=self.cells[start:stop],
            pbc=self.pbc[start:stop], names=self.names[start:stop], levels=(),
        )

    def subset(self, rows: np.ndarray) -> Selection:
        """The structures at positions ``rows`` (ascending), with their labels, offsets starting at 0."""
        rows = np.asarray(rows, dtype=np.int64)
        natoms = self.natoms[rows]
        atoms = ragged_rows(self.offsets[rows], natoms)
        per_atom = {level: value[atoms] for level, value in self.forces.items()}
        return Selection(
            ids=self.ids[rows], natoms=natoms, offsets=np.concatenate([[0], np.cumsum(natoms)]).astype(np.int64),
            numbers=self.numbers[atoms], positions=self.positions[atoms], cells=self.cells[rows], pbc=self.pbc[rows],
            names=self.names[rows], levels=self.levels,
            energies={k: v[rows] for k, v in self.energies.items()}, has_energy={k: v[rows] for k, v in self.has_energy.items()},
            forces=per_atom, has_forces={k: v[rows] for k, v in self.has_forces.items()},
            stress={k: v[rows] for k, v in self.stress.items()}, has_stress={k: v[rows] for k, v in self.has_stress.items()},
            subsets=None if self.subsets is None else self.subsets[rows],
        )

    def atoms_slice(self, k: int) -> slice:
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))

    def to_atoms(self, k: int):
        """Structure ``k`` as an ``ase.Atoms`` (positions, cell, pbc, name and id in ``info``)."""
        from ase import Atoms

        atoms = Atoms(
            numbers=self.numbers[self.atoms_slice(k)],
            positions=self.positions[self.atoms_slice(k)],
            cell=self.cells[k] if self.cells[k].any() else None,
            pbc=self.pbc[k],
        )
        atoms.info["id"] = int(self.ids[k])
        if self.names[k] is not None:
            atoms.info["name"] = self.names[k]
        return atoms


def _name_filter(names: Sequence[str]):
    exact = [name for name in names if "%" not in name]
    patterns = [name for name in names if "%" in name]
    clauses = []
    if exact:
        clauses.append(structure_table.c.name.in_(exact))
    clauses += [structure_table.c.name.like(pattern) for pattern in patterns]
    return or_(*clauses)


def _level_ids(conn: Connection, levels: Sequence[str]) -> dict[str, int]:
    rows = dict(conn.execute(select(level_table.c.name, level_table.c.id).where(level_table.c.name.in_(levels))).all())
    missing = [level for level in levels if level not in rows]
    if missing:
        known = conn.execute(select(level_table.c.name).order_by(level_table.c.id)).scalars().all()
        raise PykinmlError(f"level {missing[0]!r} is not in the database (levels: {', '.join(known) or 'none'})")
    return rows


def split_id(conn: Connection, name: str) -> int:
    """The id of a stored split; a one-line error listing the splits that exist when it is absent."""
    found = conn.execute(select(split_table.c.id).where(split_table.c.name == name)).scalar()
    if found is None:
        known = conn.execute(select(split_table.c.name).order_by(split_table.c.id)).scalars().all()
        raise PykinmlError(f"split {name!r} is not in the database (splits: {', '.join(known) or 'none'})")
    return found


def _subset_codes(subsets: Sequence[str]) -> list[int]:
    bad = [s for s in subsets if s not in SUBSET_CODE]
    if bad:
        raise PykinmlError(f"subset {bad[0]!r} is not one of {', '.join(SUBSETS)}")
    return [SUBSET_CODE[s] for s in subsets]


def _blobs_to_array(blobs: list[bytes], dtype) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype=dtype)


def _joined_query(conn, levels, optional_levels, names, split, subsets, forces, stress, require_forces):
    """(rows query, count query, label column positions): one pass joins structures with every level's label."""
    s = structure_table
    level_id = _level_ids(conn, levels + optional_levels) if levels or optional_levels else {}
    columns = [s.c.id, s.c.natoms, s.c.numbers, s.c.positions, s.c.cell, s.c.pbc, s.c.name]
    required_from = s
    if split is not None:
        sa = split_assignment_table
        on = and_(sa.c.structure_id == s.c.id, sa.c.split_id == split_id(conn, split))
        if subsets is not None:
            on = and_(on, sa.c.subset.in_(_subset_codes(subsets)))
        required_from = required_from.join(sa, on)
        columns.append(sa.c.subset)
    label_columns: dict[str, tuple[int, int | None, int | None]] = {}
    aliases = {}
    for k, level in enumerate(levels + optional_levels):
        alias = label_table.alias(f"label_{k}")
        aliases[level] = alias
        on = and_(alias.c.structure_id == s.c.id, alias.c.level_id == level_id[level])
        if level in levels:
            if require_forces and forces:
                on = and_(on, alias.c.forces.is_not(None))
            required_from = required_from.join(alias, on)
    rows_from = required_from
    for level in optional_levels:
        alias = aliases[level]
        rows_from = rows_from.outerjoin(
            alias, and_(alias.c.structure_id == s.c.id, alias.c.level_id == level_id[level])
        )
    for level in levels + optional_levels:
        alias = aliases[level]
        energy_at = len(columns)
        columns.append(alias.c.energy)
        forces_at = stress_at = None
        if forces:
            forces_at = len(columns)
            columns.append(alias.c.forces)
        if stress:
            stress_at = len(columns)
            columns.append(alias.c.stress)
        label_columns[level] = (energy_at, forces_at, stress_at)
    conditions = []
    if names is not None:
        if not names:
            raise PykinmlError("the name set is empty")
        conditions.append(_name_filter(names))
    rows_query = select(*columns).select_from(rows_from).where(*conditions).order_by(s.c.id)
    count_query = select(func.count(), func.coalesce(func.sum(s.c.natoms), 0)).select_from(required_from)
    return rows_query, count_query.where(*conditions), label_columns


def select_structures(
    engine: Engine,
    levels: Sequence[str] = (),
    optional_levels: Sequence[str] = (),
    names: Sequence[str] | None = None,
    split: str | None = None,
    subsets: Sequence[str] | None = None,
    forces: bool = True,
    stress: bool = False,
    require_forces: bool = False,
) -> Selection:
    """Select structures labelled at every level of ``levels`` (and optionally ``optional_levels``).

    ``names``: exact names or LIKE patterns (with ``%``); ``split``/``subsets``: a stored split and
    the subsets to keep (default all three). ``require_forces`` also drops structures whose required
    labels lack forces. Every name and pattern is sent to SQL as a bound parameter.
    """
    levels = list(dict.fromkeys(levels))
    optional_levels = [lvl for lvl in dict.fromkeys(optional_levels) if lvl not in levels]
    all_levels = levels + optional_levels
    if subsets is not None and split is None:
        raise PykinmlError("subsets were given without a split")
    with engine.connect() as conn:
        rows_query, count_query, label_columns = _joined_query(
            conn, levels, optional_levels, names, split, subsets, forces, stress, require_forces
        )
        count, total_atoms = conn.execute(count_query).one()
        n, total = int(count), int(total_atoms)
        selection = Selection(
            ids=np.empty(n, np.int64),
            natoms=np.empty(n, np.int64),
            offsets=np.zeros(n + 1, np.int64),
            numbers=np.empty(total, np.int64),
            positions=np.empty((total, 3), np.float64),
            cells=np.zeros((n, 3, 3), np.float64),
            pbc=np.zeros((n, 3), bool),
            names=np.empty(n, dtype=object),
            levels=tuple(all_levels),
            subsets=np.empty(n, np.int8) if split is not None else None,
        )
        for level in all_levels:
            selection.energies[level] = np.full(n, np.nan)
            selection.has_energy[level] = np.zeros(n, bool)
            if forces:
                selection.forces[level] = np.full((total, 3), np.nan)
                selection.has_forces[level] = np.zeros(n, bool)
            if stress:
                selection.stress[level] = np.full((n, 3, 3), np.nan)
                selection.has_stress[level] = np.zeros(n, bool)
        row = 0
        for chunk in fetch_chunks(conn, rows_query, FETCH_CHUNK):
            if row + len(chunk) > n:
                raise PykinmlError("the database changed while it was being read; run the selection again")
            _fill_chunk(selection, row, list(zip(*chunk)), label_columns)
            row += len(chunk)
        if row != n:
            raise PykinmlError("the database changed while it was being read; run the selection again")
    return selection


def _fill_chunk(selection: Selection, row: int, columns_of: list[tuple], label_columns) -> None:
    """Copy one chunk of joined rows (as columns) into the preallocated arrays of ``selection``."""
    m = len(columns_of[0])
    rows = slice(row, row + m)
    natoms = np.fromiter(columns_of[1], np.int64, m)
    selection.ids[rows] = np.fromiter(columns_of[0], np.int64, m)
    selection.natoms[rows] = natoms
    np.cumsum(natoms, out=selection.offsets[row + 1 : row + m + 1])
    selection.offsets[row + 1 : row + m + 1] += selection.offsets[row]
    first, last = int(selection.offsets[row]), int(selection.offsets[row + m])
    atoms = slice(first, last)
    selection.numbers[atoms] = _blobs_to_array(columns_of[2], np.uint8)
    selection.positions[atoms] = _blobs_to_array(columns_of[3], "<f8").reshape(-1, 3)
    for j, cell in enumerate(columns_of[4]):
        if cell is not None:
            selection.cells[row + j] = np.frombuffer(cell, "<f8").reshape(3, 3)
    bits = np.fromiter(columns_of[5], np.int64, m)
    selection.pbc[rows] = (bits[:, None] >> np.arange(3)) & 1 == 1
    selection.names[rows] = columns_of[6]
    if selection.subsets is not None:
        selection.subsets[rows] = np.fromiter(columns_of[7], np.int8, m)
    local_offsets = selection.offsets[row : row + m + 1] - first
    for level, (energy_at, forces_at, stress_at) in label_columns.items():
        energies = np.array([np.nan if e is None else e for e in columns_of[energy_at]], np.float64)
        selection.energies[level][rows] = energies
        selection.has_energy[level][rows] = ~np.isnan(energies)
        if forces_at is not None:
            _fill_forces(selection, level, row, first, columns_of[forces_at], local_offsets)
        if stress_at is not None:
            for j, blob in enumerate(columns_of[stress_at]):
                if blob is not None:
                    selection.stress[level][row + j] = np.frombuffer(blob, "<f8").reshape(3, 3)
                    selection.has_stress[level][row + j] = True


def _fill_forces(selection: Selection, level: str, row: int, first: int, blobs: tuple, local_offsets) -> None:
    present = [j for j, blob in enumerate(blobs) if blob is not None]
    if not present:
        return
    target = selection.forces[level]
    values = _blobs_to_array([blobs[j] for j in present], "<f8").reshape(-1, 3)
    if len(present) == len(blobs):
        target[first : first + values.shape[0]] = values
    else:
        present_index = np.array(present)
        starts, ends = local_offsets[present_index], local_offsets[present_index + 1]
        counts = ends - starts
        atom_index = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        target[first + atom_index] = values
    selection.has_forces[level][row + np.array(present)] = True
