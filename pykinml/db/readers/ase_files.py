"""Frames from anything ``ase.io`` reads (xyz, extxyz, ...), with file:line locations for text xyz formats."""

from __future__ import annotations

from collections.abc import Iterator

import ase.io
from ase import Atoms
from ase.data import chemical_symbols
from ase.io.formats import filetype, open_with_compression

from ...errors import PykinmlError
from ..frames import Frame
from .labels import LabelExtractor
from .xyz_stream import XYZFrameError, first_line, iread_xyz

XYZ_FORMATS = ("xyz", "extxyz")
_SYMBOLS = set(chemical_symbols[1:])


def _xyz_problem(lines: list[str], at: int, path: str) -> tuple[str | None, int]:
    """The problem in the xyz frame starting at 0-based line ``at`` (or None), and where the next frame starts."""
    head = lines[at].split()
    if len(head) != 1 or not head[0].isdigit():
        return f"{path}:{at + 1}: expected an atom count, got {lines[at].strip()[:60]!r}", at
    natoms = int(head[0])
    body = lines[at + 2 : at + 2 + natoms]
    for offset, line in enumerate(body):
        lineno = at + 3 + offset
        tokens = line.split()
        if not tokens:
            return f"{path}:{lineno}: empty line inside a frame of {natoms} atoms", at
        if not tokens[0].isdigit() and tokens[0].capitalize() not in _SYMBOLS:
            return f"{path}:{lineno}: unknown element symbol {tokens[0]!r}", at
        if len(tokens) < 4:
            return f"{path}:{lineno}: expected a symbol and 3 coordinates, got {line.strip()[:60]!r}", at
        try:
            [float(token) for token in tokens[1:4]]
        except ValueError:
            return f"{path}:{lineno}: coordinates are not numbers: {line.strip()[:60]!r}", at
    if len(body) < natoms:
        return f"{path}:{at + 1}: the frame declares {natoms} atoms but the file ends after {len(body)}", at
    return None, at + 2 + natoms


def _diagnose_xyz(path: str, start_line: int, exc: Exception) -> str:
    """Find the first bad line from ``start_line`` (1-based) on, frame by frame, and describe it in one line."""
    with open(path, errors="replace") as handle:
        lines = handle.readlines()
    at = start_line - 1
    while at < len(lines) and lines[at].strip():
        problem, at = _xyz_problem(lines, at, path)
        if problem:
            return problem
    return f"{path}:{start_line}: {first_line(exc)}"


def frame_from_atoms(atoms, info: dict, arrays: dict, results: dict, index: int, where: str,
                     labels: LabelExtractor, name: str | None, default_name: str) -> Frame:
    """A :class:`Frame` from an ``ase.Atoms`` and the dictionaries its labels are read from."""
    return Frame(
        numbers=atoms.numbers,
        positions=atoms.positions,
        cell=atoms.cell.array if atoms.cell.rank > 0 else None,
        pbc=tuple(bool(p) for p in atoms.pbc),
        name=name or (str(info["name"]) if info.get("name") is not None else default_name),
        temperature=_float_or_none(info.get("temperature", info.get("temp"))),
        charge=int(info.get("charge", 0) or 0),
        multiplicity=_int_or_none(info.get("multiplicity")),
        source_index=index,
        location=where,
        labels=labels(info, arrays, results, where),
    )


def iread_atoms(path: str, fmt: str | None = None) -> Iterator[tuple[Atoms, str]]:
    """Yield the frames of ``path`` with their location: ``file:line`` for xyz text (read by
    :func:`~pykinml.db.readers.xyz_stream.iread_xyz`), else ``file: frame k`` (``ase.io.iread``); an unreadable
    frame is a one-line error that names the file and the line or frame."""
    fmt = fmt or filetype(path, read=True)
    if fmt in XYZ_FORMATS:
        with open_with_compression(path, "r") as handle:
            try:
                for atoms, line in iread_xyz(handle):
                    yield atoms, f"{path}:{line}"
            except XYZFrameError as exc:
                raise PykinmlError(_diagnose_xyz(path, exc.line, exc)) from None
        return
    index = 0
    frames = ase.io.iread(path, index=":", format=fmt)
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # ase.io raises many types; each becomes one line naming the place
            raise PykinmlError(f"{path}: frame {index}: {first_line(exc)}") from None
        yield atoms, f"{path}: frame {index}"
        index += 1


def read_ase_file(
    path: str,
    fmt: str,
    labels: LabelExtractor,
    name: str | None,
    default_name: str,
) -> Iterator[Frame]:
    """Yield the frames of ``path`` (read with ``ase.io.iread``); index = 0-based frame number."""
    for index, (atoms, where) in enumerate(iread_atoms(path, fmt)):
        results = dict(atoms.calc.results) if atoms.calc is not None else {}
        yield frame_from_atoms(atoms, atoms.info, atoms.arrays, results, index, where, labels, name, default_name)


def _float_or_none(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _int_or_none(value) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
