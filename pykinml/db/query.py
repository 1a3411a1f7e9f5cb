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
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.engine import Connection, Engine

from ..errors import PykinmlError
from .schema import (
    SUBSET_CODE,
    SUBSETS,
    label_table,
    level_table,
    split_assignment_table,
    split_table,
    structure_table,
)

FETCH_CHUNK = 20000


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
    levels, optional_levels = list(levels), [lvl for lvl in optional_levels if lvl not in levels]
    all_levels = levels + optional_levels
    if subsets is not None and split is None:
        raise PykinmlError("subsets were given without a split")
    s = structure_table
    with engine.connect() as conn:
        level_id = _level_ids(conn, all_levels) if all_levels else {}
        conditions = []
        if names is not None:
            if not names:
                raise PykinmlError("the name set is empty")
            conditions.append(_name_filter(names))
        for level in levels:
            label_exists = and_(label_table.c.structure_id == s.c.id, label_table.c.level_id == level_id[level])
            if require_forces and forces:
                label_exists = and_(label_exists, label_table.c.forces.is_not(None))
            conditions.append(exists().where(label_exists))
        columns = [s.c.id, s.c.natoms, s.c.numbers, s.c.positions, s.c.cell, s.c.pbc, s.c.name]
        base = select(s.c.id)
        if split is not None:
            sa = split_assignment_table
            join = and_(sa.c.structure_id == s.c.id, sa.c.split_id == split_id(conn, split))
            if subsets is not None:
                join = and_(join, sa.c.subset.in_(_subset_codes(subsets)))
            columns.append(sa.c.subset)
            base = base.join(sa, join)
            rows_query = select(*columns).select_from(s).join(sa, join)
        else:
            rows_query = select(*columns).select_from(s)
        if conditions:
            base = base.where(*conditions)
            rows_query = rows_query.where(*conditions)
        ids_subquery = base  # the same filter, reused by the count and the label queries
        count, total_atoms = conn.execute(
            select(func.count(), func.coalesce(func.sum(s.c.natoms), 0)).where(s.c.id.in_(ids_subquery))
        ).one()
        n, total = int(count), int(total_atoms)
        ids = np.empty(n, np.int64)
        natoms = np.empty(n, np.int64)
        numbers = np.empty(total, np.int64)
        positions = np.empty((total, 3), np.float64)
        cells = np.zeros((n, 3, 3), np.float64)
        pbc_bits = np.zeros(n, np.int64)
        names_out = np.empty(n, dtype=object)
        subset_codes = np.empty(n, np.int8) if split is not None else None
        row, atom = 0, 0
        result = conn.execution_options(yield_per=FETCH_CHUNK).execute(rows_query.order_by(s.c.id))
        for chunk in result.partitions():
            m = len(chunk)
            columns_of = list(zip(*chunk))
            chunk_natoms = np.fromiter(columns_of[1], np.int64, m)
            k = int(chunk_natoms.sum())
            ids[row : row + m] = np.fromiter(columns_of[0], np.int64, m)
            natoms[row : row + m] = chunk_natoms
            numbers[atom : atom + k] = _blobs_to_array(columns_of[2], np.uint8)
            positions[atom : atom + k] = _blobs_to_array(columns_of[3], "<f8").reshape(k, 3)
            for j, cell in enumerate(columns_of[4]):
                if cell is not None:
                    cells[row + j] = np.frombuffer(cell, "<f8").reshape(3, 3)
            pbc_bits[row : row + m] = np.fromiter(columns_of[5], np.int64, m)
            names_out[row : row + m] = columns_of[6]
            if subset_codes is not None:
                subset_codes[row : row + m] = np.fromiter(columns_of[7], np.int8, m)
            row, atom = row + m, atom + k
        if row != n:
            raise PykinmlError("the database changed while it was being read; run the selection again")
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(natoms, out=offsets[1:])
        selection = Selection(
            ids=ids,
            natoms=natoms,
            offsets=offsets,
            numbers=numbers,
            positions=positions,
            cells=cells,
            pbc=(pbc_bits[:, None] >> np.arange(3)) & 1 == 1,
            names=names_out,
            levels=tuple(all_levels),
            subsets=subset_codes,
        )
        for level in all_levels:
            _fill_level(conn, selection, level, level_id[level], ids_subquery, forces, stress)
    return selection


def _fill_level(conn, selection: Selection, level: str, level_id: int, ids_subquery, forces: bool, stress: bool):
    n, total = len(selection), int(selection.offsets[-1])
    energies = np.full(n, np.nan)
    present = np.zeros(n, bool)
    force_array = np.full((total, 3), np.nan) if forces else None
    has_forces = np.zeros(n, bool)
    stress_array = np.full((n, 3, 3), np.nan) if stress else None
    has_stress = np.zeros(n, bool)
    columns = [label_table.c.structure_id, label_table.c.energy]
    columns += [label_table.c.forces] if forces else []
    columns += [label_table.c.stress] if stress else []
    query = (
        select(*columns)
        .where(label_table.c.level_id == level_id)
        .where(label_table.c.structure_id.in_(ids_subquery))
        .order_by(label_table.c.structure_id)
    )
    result = conn.execution_options(yield_per=FETCH_CHUNK).execute(query)
    for chunk in result.partitions():
        m = len(chunk)
        columns_of = list(zip(*chunk))
        rows = np.searchsorted(selection.ids, np.fromiter(columns_of[0], np.int64, m))
        energies[rows] = np.fromiter(columns_of[1], np.float64, m)
        present[rows] = True
        if forces:
            with_forces = [j for j, blob in enumerate(columns_of[2]) if blob is not None]
            if with_forces:
                blobs = [columns_of[2][j] for j in with_forces]
                block = _blobs_to_array(blobs, "<f8").reshape(-1, 3)
                targets = rows[with_forces]
                has_forces[targets] = True
                starts = selection.offsets[targets]
                counts = selection.natoms[targets]
                atom_index = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
                force_array[atom_index] = block
        if stress:
            for j, blob in enumerate(columns_of[-1]):
                if blob is not None:
                    stress_array[rows[j]] = np.frombuffer(blob, "<f8").reshape(3, 3)
                    has_stress[rows[j]] = True
    selection.energies[level] = energies
    selection.has_energy[level] = present
    if forces:
        selection.forces[level] = force_array
        selection.has_forces[level] = has_forces
    if stress:
        selection.stress[level] = stress_array
        selection.has_stress[level] = has_stress
