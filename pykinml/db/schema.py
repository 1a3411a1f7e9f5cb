"""The SQL schema (SQLAlchemy 2.x ORM): structures, levels of theory, labels, provenance and stored splits.

Arrays are little-endian bytes (float64 positions/forces/stress/cell, uint8 atomic numbers) so SQLite
and PostgreSQL hold the same bytes; shapes follow from ``structure.natoms``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1

#: Split subset codes stored in ``split_assignment.subset``.
SUBSETS = ("train", "val", "test")
SUBSET_CODE = {name: code for code, name in enumerate(SUBSETS)}


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the database itself (schema version)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Source(Base):
    """One imported file; ``name`` (default: the file stem) is what mask files call ``<formula>``."""

    __tablename__ = "source"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    path: Mapped[str] = mapped_column(String(4096))
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(32))
    imported_at: Mapped[dt.datetime] = mapped_column(server_default=func.current_timestamp())


class Level(Base):
    """A level of theory (fidelity); the training order low → high comes from the run's config."""

    __tablename__ = "level"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    fidelity: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Structure(Base):
    """A geometry: atoms, positions (Å), optional cell, and the tags a selection filters on."""

    __tablename__ = "structure"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    natoms: Mapped[int] = mapped_column(Integer)
    formula: Mapped[str] = mapped_column(String(255))
    numbers: Mapped[bytes] = mapped_column(LargeBinary)  # uint8 × natoms
    positions: Mapped[bytes] = mapped_column(LargeBinary)  # <f8 × natoms × 3, Å
    cell: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # <f8 × 9, Å
    pbc: Mapped[int] = mapped_column(SmallInteger, default=0)  # bit k set: periodic along cell vector k
    charge: Mapped[int] = mapped_column(Integer, default=0)
    multiplicity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    temperature: Mapped[float | None] = mapped_column(Double, nullable=True)
    geometry_hash: Mapped[str] = mapped_column(String(32), unique=True)


class Provenance(Base):
    """Where a structure came from: (source file, original row id or frame index); one structure may have several."""

    __tablename__ = "provenance"
    source_id: Mapped[int] = mapped_column(ForeignKey("source.id"), primary_key=True)
    source_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    structure_id: Mapped[int] = mapped_column(ForeignKey("structure.id"), index=True)


class Label(Base):
    """Energy (eV), forces (eV/Å, optional) and stress (eV/Å³, 3×3, optional) of one structure at one level."""

    __tablename__ = "label"
    # The unique index serves every lookup (selections join from structure to label).
    __table_args__ = (UniqueConstraint("structure_id", "level_id", name="uq_label_structure_level"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    structure_id: Mapped[int] = mapped_column(ForeignKey("structure.id"))
    level_id: Mapped[int] = mapped_column(ForeignKey("level.id"))
    energy: Mapped[float] = mapped_column(Double)
    forces: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    stress: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.current_timestamp())


class Split(Base):
    """A named train/val/test split stored in the database so every run and every rank sees the same one."""

    __tablename__ = "split"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    method: Mapped[str] = mapped_column(String(255))
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.current_timestamp())


class SplitAssignment(Base):
    """One structure's subset in one split; the primary key makes subsets disjoint by construction."""

    __tablename__ = "split_assignment"
    __table_args__ = (Index("ix_split_assignment_subset", "split_id", "subset"),)
    split_id: Mapped[int] = mapped_column(ForeignKey("split.id", ondelete="CASCADE"), primary_key=True)
    structure_id: Mapped[int] = mapped_column(ForeignKey("structure.id"), primary_key=True)
    subset: Mapped[int] = mapped_column(SmallInteger)


meta_table = Meta.__table__
source_table = Source.__table__
level_table = Level.__table__
structure_table = Structure.__table__
provenance_table = Provenance.__table__
label_table = Label.__table__
split_table = Split.__table__
split_assignment_table = SplitAssignment.__table__
