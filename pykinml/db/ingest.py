"""Writing frames into the database: one transaction per source, bulk inserts, geometry de-duplication.

A structure is identified by a hash of its exact bytes (atoms, positions, cell, pbc, charge,
multiplicity): the same geometry labelled at several levels, in one file or in several, becomes one
structure row with several labels. A label that already exists is kept when identical, and
otherwise handled by ``on_conflict`` (error, skip, replace).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from ..errors import PykinmlError
from .bulk import bulk_insert
from .frames import STRUCTURE_COLUMNS, EncodedFrame, Frame, check_finite, encode_frame
from .schema import label_table, level_table, provenance_table, source_table, structure_table

ON_CONFLICT = ("error", "skip", "replace")
LOOKUP_CHUNK = 900  # bound parameters per IN (...) query: under every backend's limit


@dataclass
class SourceInfo:
    """The file being imported: ``name`` is what mask files call it (``<name>/<source_index>``)."""

    name: str
    path: str
    sha256: str
    format: str


@dataclass
class ImportReport:
    """What one import did, for the CLI summary and for tests."""

    source: str
    frames: int = 0
    new_structures: int = 0
    labels_added: dict[str, int] = field(default_factory=dict)
    labels_unchanged: int = 0
    labels_replaced: int = 0
    labels_skipped: int = 0

    def summary(self) -> str:
        per_level = ", ".join(f"{level}: {n}" for level, n in self.labels_added.items()) or "none"
        text = (
            f"{self.source}: {self.frames} frames, {self.new_structures} new structures, "
            f"labels added ({per_level})"
        )
        extras = [
            f"{n} {what}"
            for n, what in (
                (self.labels_unchanged, "identical labels already present"),
                (self.labels_replaced, "labels replaced"),
                (self.labels_skipped, "conflicting labels skipped"),
            )
            if n
        ]
        return text + (f"; {', '.join(extras)}" if extras else "")


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _source_id(conn: Connection, source: SourceInfo) -> int:
    row = conn.execute(
        select(source_table.c.id, source_table.c.sha256, source_table.c.path).where(source_table.c.name == source.name)
    ).first()
    if row is None:
        return conn.execute(
            insert(source_table).returning(source_table.c.id),
            {"name": source.name, "path": source.path, "sha256": source.sha256, "format": source.format},
        ).scalar_one()
    if row.sha256 != source.sha256:
        raise PykinmlError(
            f"{source.path}: source name {source.name!r} is already used by {row.path} (different content); "
            "pass --source-name to give this file another name"
        )
    return row.id


def level_ids(conn: Connection, names: Iterable[str], fidelities: dict[str, int] | None = None) -> dict[str, int]:
    """Ids of the named levels, creating those that do not exist yet (with their fidelity number if known)."""
    fidelities = fidelities or {}
    ids: dict[str, int] = {}
    for name in names:
        found = conn.execute(select(level_table.c.id).where(level_table.c.name == name)).scalar()
        if found is None:
            found = conn.execute(
                insert(level_table).returning(level_table.c.id), {"name": name, "fidelity": fidelities.get(name)}
            ).scalar_one()
        ids[name] = found
    return ids


class _Writer:
    """State of one import transaction: which hashes and labels are known, and the counters."""

    def __init__(self, conn: Connection, source_id: int, report: ImportReport, on_conflict: str, fidelities):
        self.conn = conn
        self.source_id = source_id
        self.report = report
        self.on_conflict = on_conflict
        self.fidelities = fidelities
        self.levels: dict[str, int] = {}
        self.structure_of_hash: dict[str, int] = {}
        self.new_ids: set[int] = set()
        # What this source says: (structure id, level id) -> (energy, forces, stress, location of first frame).
        self.written: dict[tuple[int, int], tuple] = {}
        # An empty table at the start means every structure this import meets is one it wrote itself.
        self.database_was_empty = conn.execute(select(structure_table.c.id).limit(1)).first() is None
        self.known_provenance = dict(
            conn.execute(
                select(provenance_table.c.source_index, provenance_table.c.structure_id).where(
                    provenance_table.c.source_id == source_id
                )
            ).all()
        )

    def _existing_structures(self, hashes: list[str]) -> None:
        if self.database_was_empty:
            return
        unknown = [h for h in hashes if h not in self.structure_of_hash]
        for chunk in _chunks(unknown, LOOKUP_CHUNK):
            rows = self.conn.execute(
                select(structure_table.c.geometry_hash, structure_table.c.id).where(
                    structure_table.c.geometry_hash.in_(chunk)
                )
            )
            self.structure_of_hash.update(rows.all())

    def _existing_labels(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], tuple]:
        found: dict[tuple[int, int], tuple] = {}
        by_level: dict[int, list[int]] = {}
        for structure_id, level_id in keys:
            by_level.setdefault(level_id, []).append(structure_id)
        for level_id, structure_ids in by_level.items():
            for chunk in _chunks(structure_ids, LOOKUP_CHUNK):
                rows = self.conn.execute(
                    select(label_table.c.structure_id, label_table.c.energy, label_table.c.forces, label_table.c.stress)
                    .where(label_table.c.level_id == level_id)
                    .where(label_table.c.structure_id.in_(chunk))
                )
                for structure_id, energy, forces, stress in rows:
                    found[(structure_id, level_id)] = (energy, forces, stress)
        return found

    def write(self, frames: list[Frame]) -> None:
        encoded: list[tuple[Frame, EncodedFrame]] = [(frame, encode_frame(frame)) for frame in frames]
        check_finite(encoded)
        new_levels = {level for _, enc in encoded for level in enc.labels if level not in self.levels}
        if new_levels:
            self.levels.update(level_ids(self.conn, sorted(new_levels), self.fidelities))
        self._existing_structures([enc.geometry_hash for _, enc in encoded])

        new_rows: dict[str, tuple] = {}
        for _, enc in encoded:
            if enc.geometry_hash not in self.structure_of_hash and enc.geometry_hash not in new_rows:
                new_rows[enc.geometry_hash] = (*enc.row, enc.geometry_hash)
        if new_rows:
            # Plain executemany, then the new ids: every row above the previous maximum whose hash is ours
            # (portable, and correct beside concurrent writers, whose rows have other hashes).
            last_id = self.conn.execute(select(func.coalesce(func.max(structure_table.c.id), 0))).scalar_one()
            bulk_insert(self.conn, structure_table, STRUCTURE_COLUMNS + ("geometry_hash",), list(new_rows.values()))
            for geometry_hash, structure_id in self.conn.execute(
                select(structure_table.c.geometry_hash, structure_table.c.id).where(structure_table.c.id > last_id)
            ):
                if geometry_hash in new_rows:
                    self.structure_of_hash[geometry_hash] = structure_id
            self.new_ids.update(self.structure_of_hash[h] for h in new_rows)
            self.report.new_structures += len(new_rows)

        provenance_rows = []
        for frame, enc in encoded:
            structure_id = self.structure_of_hash[enc.geometry_hash]
            known = self.known_provenance.get(frame.source_index)
            if known is None:
                self.known_provenance[frame.source_index] = structure_id
                provenance_rows.append((self.source_id, frame.source_index, structure_id))
            elif known != structure_id:
                raise PykinmlError(
                    f"{frame.location}: index {frame.source_index} of this source is already stored as "
                    f"structure id {known} with a different geometry"
                )
        if provenance_rows:
            bulk_insert(self.conn, provenance_table, ("source_id", "source_index", "structure_id"), provenance_rows)
        self._write_labels(encoded)
        self.report.frames += len(frames)

    def _write_labels(self, encoded: list[tuple[Frame, EncodedFrame]]) -> None:
        candidates = []
        for frame, enc in encoded:
            structure_id = self.structure_of_hash[enc.geometry_hash]
            for level, (energy, forces, stress) in enc.labels.items():
                candidates.append(((structure_id, self.levels[level]), level, energy, forces, stress, frame.location))
        old_keys = [key for key, *_ in candidates if key[0] not in self.new_ids and key not in self.written]
        stored = self._existing_labels(old_keys) if old_keys else {}
        inserts, updates = [], []
        for key, level, energy, forces, stress, location in candidates:
            values = (energy, forces, stress)
            earlier = self.written.get(key)  # what this source already said for this structure and level
            if earlier is not None:
                if earlier[:3] != values:
                    raise PykinmlError(f"{location}: same geometry as {earlier[3]} but a different label at level {level!r}")
                self.report.labels_unchanged += 1
                continue
            self.written[key] = (*values, location)
            old = stored.get(key)
            if old is None:
                inserts.append((key[0], key[1], energy, forces, stress))
                self.report.labels_added[level] = self.report.labels_added.get(level, 0) + 1
            elif old == values:
                self.report.labels_unchanged += 1
            elif self.on_conflict == "error":
                raise PykinmlError(
                    f"{location}: structure id {key[0]} already has a different label at level {level!r} "
                    "(use --on-conflict skip or replace)"
                )
            elif self.on_conflict == "skip":
                self.report.labels_skipped += 1
            else:
                updates.append({"sid": key[0], "lid": key[1], "energy": energy, "forces": forces, "stress": stress})
                self.report.labels_replaced += 1
        if inserts:
            bulk_insert(self.conn, label_table, ("structure_id", "level_id", "energy", "forces", "stress"), inserts)
        if updates:
            self.conn.execute(
                update(label_table)
                .where(and_(label_table.c.structure_id == bindparam("sid"), label_table.c.level_id == bindparam("lid")))
                .values(energy=bindparam("energy"), forces=bindparam("forces"), stress=bindparam("stress")),
                updates,
            )


def import_frames(
    engine: Engine,
    frames: Iterable[Frame],
    source: SourceInfo,
    on_conflict: str = "error",
    fidelities: dict[str, int] | None = None,
    batch_size: int = 5000,
) -> ImportReport:
    """Write ``frames`` from one source in a single transaction: on any error nothing of the source is kept."""
    if on_conflict not in ON_CONFLICT:
        raise PykinmlError(f"--on-conflict must be one of {', '.join(ON_CONFLICT)}, got {on_conflict!r}")
    report = ImportReport(source=source.path)
    try:
        with engine.begin() as conn:
            writer = _Writer(conn, _source_id(conn, source), report, on_conflict, fidelities)
            for batch in _chunks(frames, batch_size):
                writer.write(batch)
    except IntegrityError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise PykinmlError(f"{source.path}: the database refused the import ({reason}); nothing was written") from None
    return report
