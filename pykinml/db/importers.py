"""``pykinml-db import``: detect a file's format, read it with the right reader, write it in one transaction."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass, field

from ase.io.formats import filetype
from sqlalchemy.engine import Engine

from ..errors import PykinmlError
from .ingest import ImportReport, SourceInfo, import_frames
from .readers.ase_db import read_ase_db
from .readers.ase_files import read_ase_file
from .readers.labels import LabelExtractor, LevelKeys, Units
from .readers.legacy import level_name_of, read_legacy, read_legacy_fidelities
from .readers.mlearn import MLEARN, looks_like_mlearn, read_mlearn

LEGACY = "pykinml-legacy"
ASE_DB = "ase-db"


@dataclass
class ImportOptions:
    """What the user said about how to read files (the ``pykinml-db import`` options)."""

    levels: list[LevelKeys] = field(default_factory=list)
    level_name: str = "default"
    level_names: dict[int, str] = field(default_factory=dict)
    units: Units = field(default_factory=Units)
    name: str | None = None
    source_name: str | None = None
    formula: str | None = None
    on_conflict: str = "error"
    format: str | None = None


def _sqlite_tables(path: str) -> set[str]:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        raise PykinmlError(f"{path}: unreadable SQLite file: {exc}") from None


def detect_format(path: str) -> str:
    """``pykinml-legacy``, ``ase-db``, ``mlearn-json`` or an ``ase.io`` format name, from the file's content."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"SQLite format 3"):
        tables = _sqlite_tables(path)
        if {"xyz", "energy"} <= tables:
            return LEGACY
        if "systems" in tables:
            return ASE_DB
        if "structure" in tables and "label" in tables:
            raise PykinmlError(f"{path}: this is a pykinml database; use it as --db, or export it to extxyz first")
        raise PykinmlError(f"{path}: SQLite file with tables {sorted(tables)} is neither PyKinML nor an ASE database")
    if looks_like_mlearn(path):
        return MLEARN
    try:
        fmt = filetype(path, read=True)
    except Exception as exc:
        raise PykinmlError(f"{path}: cannot tell the file format ({exc}); pass --format") from None
    return ASE_DB if fmt in ("db", "json") else fmt


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stem(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (".extxyz", ".xyz", ".db", ".json", ".traj", ".gz", ".bz2", ".xz"):
        if base.endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
    return os.path.splitext(base)[0] or base


def _mlearn_level(path: str, options: ImportOptions) -> str:
    """The level of an mlearn JSON file (one level under fixed keys): a bare ``--level NAME``, else ``--level-name``."""
    if options.units != Units():
        raise PykinmlError(f"{path}: mlearn JSON is in eV, eV/Å and kbar; --units and --force-units do not apply")
    if not options.levels:
        return options.level_name
    if len(options.levels) == 1 and options.levels[0].bare:
        return options.levels[0].name
    raise PykinmlError(f"{path}: an mlearn JSON file holds one level under fixed keys; name it with --level-name NAME")


def import_file(engine: Engine, path: str, options: ImportOptions | None = None) -> ImportReport:
    """Import one file; a bad file raises :class:`PykinmlError` and leaves the database as it was."""
    options = options or ImportOptions()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PykinmlError(f"{path}: no such file")
    fmt = options.format or detect_format(path)
    stem = _stem(path)
    source = SourceInfo(
        name=options.source_name or stem, path=os.path.abspath(path), sha256=_sha256(path), format=fmt
    )
    fidelities: dict[str, int] = {}
    if fmt == LEGACY:
        if options.levels:
            raise PykinmlError(f"{path}: --level does not apply to PyKinML files; use --level-names N=NAME")
        for fidelity in read_legacy_fidelities(path):
            fidelities[level_name_of(fidelity, options.level_names)] = fidelity
        frames = read_legacy(path, options.formula or stem, options.level_names, options.units, options.name)
    elif fmt == MLEARN:
        frames = read_mlearn(path, _mlearn_level(path, options), options.name, stem)
    else:
        labels = LabelExtractor(options.levels, options.level_name, options.units)
        if fmt == ASE_DB:
            frames = read_ase_db(path, labels, options.name, stem)
        else:
            frames = read_ase_file(path, fmt, labels, options.name, stem)
    return import_frames(engine, frames, source, on_conflict=options.on_conflict, fidelities=fidelities)
