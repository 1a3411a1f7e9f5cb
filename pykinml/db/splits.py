"""Named train/val/test splits stored in the database, and PyKinML mask files (``<source>/<index> <2|-1>``).

A split assigns each structure one subset through the primary key (split, structure), so train, val
and test are disjoint by construction. Mask files name structures by their provenance: the source
name (the formula for a PyKinML file) and the original row id (or frame index).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection, Engine

from ..errors import PykinmlError
from ..files import write_atomically
from .bulk import bulk_insert
from .query import select_structures, split_id
from .schema import (
    SUBSET_CODE,
    SUBSETS,
    provenance_table,
    source_table,
    split_assignment_table,
    split_table,
)

MASK_POOL, MASK_TEST = 2, -1


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        raise PykinmlError(f"--seed must be a non-negative integer below 2**63, got {seed}")


def _store(conn: Connection, name: str, method: str, seed: int | None, ids: np.ndarray, codes: np.ndarray,
           replace: bool) -> dict[str, int]:
    existing = conn.execute(select(split_table.c.id).where(split_table.c.name == name)).scalar()
    if existing is not None:
        if not replace:
            raise PykinmlError(f"split {name!r} already exists (pass --replace to overwrite it)")
        conn.execute(delete(split_assignment_table).where(split_assignment_table.c.split_id == existing))
        conn.execute(delete(split_table).where(split_table.c.id == existing))
    new_id = conn.execute(
        insert(split_table).returning(split_table.c.id), {"name": name, "method": method, "seed": seed}
    ).scalar_one()
    rows = [(new_id, i, c) for i, c in zip(ids.tolist(), codes.tolist())]
    bulk_insert(conn, split_assignment_table, ("split_id", "structure_id", "subset"), rows)
    return {subset: int(np.sum(codes == code)) for subset, code in SUBSET_CODE.items()}


def _counts_from_fractions(fractions: Sequence[float], n: int) -> list[int]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise PykinmlError(f"--fractions needs three non-negative numbers (train val test) that sum to 1, got {list(fractions)}")
    n_train = int(round(fractions[0] * n))
    n_val = min(int(round(fractions[1] * n)), n - n_train)
    return [n_train, n_val, n - n_train - n_val]


def create_split(
    engine: Engine,
    name: str,
    fractions: Sequence[float] | None = None,
    counts: Sequence[int] | None = None,
    seed: int = 0,
    levels: Sequence[str] = (),
    names: Sequence[str] | None = None,
    replace: bool = False,
    test_names: Sequence[str] | None = None,
) -> dict[str, int]:
    """Store a random split of the structures (optionally only those labelled at ``levels`` and in ``names``).

    ``fractions`` (train, val, test) cover every selected structure; ``counts`` take that many and
    leave the rest out of the split. The permutation is numpy's ``default_rng(seed)`` over ids in order.
    ``test_names``: a fixed test set (e.g. a benchmark's own test file), the structures with these names;
    they are kept out of the random part, which then usually has a test share of 0.
    """
    if (fractions is None) == (counts is None):
        raise PykinmlError("give exactly one of --fractions or --counts")
    _check_seed(seed)
    ids = select_structures(engine, levels=levels, names=names, forces=False).ids
    fixed_test = np.zeros(0, np.int64)
    if test_names:
        fixed_test = select_structures(engine, levels=levels, names=test_names, forces=False).ids
        if fixed_test.size == 0:
            raise PykinmlError(f"split {name!r}: no structure has a name in --test-names {list(test_names)}")
        ids = ids[~np.isin(ids, fixed_test)]
    if ids.size == 0:
        raise PykinmlError(f"split {name!r}: no structure matches the given levels and names")
    if counts is not None:
        if len(counts) != 3 or any(c < 0 for c in counts):
            raise PykinmlError(f"--counts needs three non-negative integers (train val test), got {list(counts)}")
        if sum(counts) > ids.size:
            raise PykinmlError(f"--counts {list(counts)} asks for {sum(counts)} structures but {ids.size} are selected")
        sizes = [int(c) for c in counts]
        method = f"counts {sizes}"
    else:
        sizes = _counts_from_fractions(fractions, ids.size)
        method = f"fractions {list(fractions)}"
    order = np.random.default_rng(seed).permutation(ids.size)[: sum(sizes)]
    chosen = np.concatenate([ids[order], fixed_test])
    codes = np.concatenate([np.repeat(np.arange(3, dtype=np.int8), sizes), np.full(fixed_test.size, 2, np.int8)])
    with engine.begin() as conn:
        return _store(conn, name, method, seed, chosen, codes, replace)


def assign_split(engine: Engine, name: str, subsets: dict[str, Sequence[int]], replace: bool = False) -> dict[str, int]:
    """Store a split with the given structure ids per subset (``{'train': ids, 'val': ids, 'test': ids}``)."""
    bad = [subset for subset in subsets if subset not in SUBSET_CODE]
    if bad:
        raise PykinmlError(f"subset {bad[0]!r} is not one of {', '.join(SUBSET_CODE)}")
    ids = np.concatenate([np.asarray(subsets[s], dtype=np.int64) for s in subsets]) if subsets else np.zeros(0, np.int64)
    codes = np.concatenate([np.full(len(subsets[s]), SUBSET_CODE[s], np.int8) for s in subsets]) if subsets else np.zeros(0, np.int8)
    if np.unique(ids).size != ids.size:
        raise PykinmlError(f"split {name!r}: a structure id is assigned to more than one subset")
    with engine.begin() as conn:
        return _store(conn, name, "assigned", None, ids, codes, replace)


def _provenance_lookup(conn: Connection, sources: set[str]) -> dict[tuple[str, int], int]:
    rows = conn.execute(
        select(source_table.c.name, provenance_table.c.source_index, provenance_table.c.structure_id)
        .join(provenance_table, provenance_table.c.source_id == source_table.c.id)
        .where(source_table.c.name.in_(sorted(sources)))
    )
    return {(source, index): structure for source, index, structure in rows}


def read_mask(path: str) -> list[tuple[int, str, int, int]]:
    """Parse a PyKinML mask file into (line number, source, index, flag); one-line errors name the line."""
    entries = []
    try:
        handle = open(path)
    except OSError as exc:
        raise PykinmlError(f"{path}: cannot read mask file ({exc.strerror})") from None
    with handle:
        for lineno, line in enumerate(handle, 1):
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            source, slash, index = tokens[0].rpartition("/")
            if not slash or not source or not index.lstrip("-").isdigit() or len(tokens) < 2:
                raise PykinmlError(f"{path}:{lineno}: expected '<source>/<id> <2|-1> ...', got {line.strip()[:60]!r}")
            if tokens[1] not in ("2", "-1"):
                raise PykinmlError(f"{path}:{lineno}: the flag must be 2 (train/val) or -1 (test), got {tokens[1]!r}")
            entries.append((lineno, source, int(index), int(tokens[1])))
    if not entries:
        raise PykinmlError(f"{path}: the mask file has no entries")
    return entries


def import_mask(
    engine: Engine, name: str, path: str, val_fraction: float = 0.1, seed: int = 0, replace: bool = False
) -> dict[str, int]:
    """Store a split from a PyKinML mask file: -1 → test; the 2-pool is divided into train and val by ``seed``."""
    if not 0.0 <= val_fraction < 1.0:
        raise PykinmlError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    _check_seed(seed)
    entries = read_mask(path)
    with engine.begin() as conn:
        lookup = _provenance_lookup(conn, {source for _, source, _, _ in entries})
        flag_of: dict[int, tuple[int, int]] = {}  # structure id -> (flag, line)
        for lineno, source, index, flag in entries:
            structure = lookup.get((source, index))
            if structure is None:
                raise PykinmlError(f"{path}:{lineno}: {source}/{index} names no structure in the database")
            earlier = flag_of.get(structure)
            if earlier is not None and earlier[0] != flag:
                raise PykinmlError(
                    f"{path}:{lineno}: {source}/{index} is the same structure as line {earlier[1]} with another flag"
                )
            flag_of.setdefault(structure, (flag, lineno))
        ids = np.array(sorted(flag_of), dtype=np.int64)
        flags = np.array([flag_of[i][0] for i in ids.tolist()], dtype=np.int64)
        codes = np.where(flags == MASK_TEST, SUBSET_CODE["test"], SUBSET_CODE["train"]).astype(np.int8)
        pool = np.flatnonzero(flags == MASK_POOL)
        n_val = int(round(val_fraction * pool.size))
        codes[np.random.default_rng(seed).permutation(pool)[:n_val]] = SUBSET_CODE["val"]
        return _store(conn, name, f"mask {os.path.basename(path)} val_fraction {val_fraction}", seed, ids, codes, replace)


def export_mask(engine: Engine, name: str, path: str) -> int:
    """Write split ``name`` as a PyKinML mask file (train and val → 2, test → -1); returns the line count."""
    with engine.connect() as conn:
        sid = split_id(conn, name)
        sa = split_assignment_table
        # One line per structure: its first provenance (lowest source id, then lowest index).
        rows = conn.execute(
            select(sa.c.structure_id, sa.c.subset, source_table.c.name, provenance_table.c.source_index)
            .join(provenance_table, provenance_table.c.structure_id == sa.c.structure_id)
            .join(source_table, source_table.c.id == provenance_table.c.source_id)
            .where(sa.c.split_id == sid)
            .order_by(sa.c.structure_id, source_table.c.id, provenance_table.c.source_index)
        ).all()
    lines, seen = [], set()
    for structure, subset, source, index in rows:
        if structure in seen:
            continue
        seen.add(structure)
        flag = MASK_TEST if subset == SUBSET_CODE["test"] else MASK_POOL
        lines.append(f"{source}/{index} {flag}\n")
    write_atomically(path, "".join(lines))
    return len(lines)


def split_counts(engine: Engine) -> dict[str, dict[str, int]]:
    """Structures per subset for every stored split, by split name."""
    from sqlalchemy import func

    with engine.connect() as conn:
        rows = conn.execute(
            select(split_table.c.name, split_assignment_table.c.subset, func.count())
            .join(split_assignment_table, split_assignment_table.c.split_id == split_table.c.id, isouter=True)
            .group_by(split_table.c.name, split_assignment_table.c.subset)
            .order_by(split_table.c.name)
        ).all()
    counts: dict[str, dict[str, int]] = {}
    for split, subset, n in rows:
        entry = counts.setdefault(split, dict.fromkeys(SUBSETS, 0))
        if subset is not None:
            entry[SUBSETS[subset]] = int(n)
    return counts
