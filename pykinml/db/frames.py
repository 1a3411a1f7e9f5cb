"""The record every importer yields (one geometry with its labels), its validation and its byte encoding."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from ase.data import chemical_symbols

from ..errors import PykinmlError

MAX_Z = 118


@dataclass
class LevelLabel:
    """Energy (eV), forces (eV/Å, (N, 3)) and stress (eV/Å³, 3×3) of a frame at one level; forces/stress optional."""

    energy: float
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None


@dataclass
class Frame:
    """One geometry as an importer read it; ``location`` names its file and line or row id in error messages."""

    numbers: np.ndarray
    positions: np.ndarray
    source_index: int
    location: str
    cell: np.ndarray | None = None
    pbc: tuple[bool, bool, bool] = (False, False, False)
    name: str | None = None
    temperature: float | None = None
    charge: int = 0
    multiplicity: int | None = None
    labels: dict[str, LevelLabel] = field(default_factory=dict)


#: The ``structure`` columns of :attr:`EncodedFrame.row`, in order.
STRUCTURE_COLUMNS = (
    "natoms", "formula", "numbers", "positions", "cell", "pbc", "charge", "multiplicity", "name", "temperature",
)
POSITIONS, CELL = STRUCTURE_COLUMNS.index("positions"), STRUCTURE_COLUMNS.index("cell")


@dataclass
class EncodedFrame:
    """A validated frame as the bytes and scalars that go into the ``structure`` table."""

    row: tuple
    geometry_hash: str
    labels: dict[str, tuple[float, bytes | None, bytes | None]]


def hill_formula(numbers: np.ndarray) -> str:
    """Hill-order formula (C, H, then alphabetical; alphabetical when there is no carbon)."""
    counts = {chemical_symbols[z]: int(c) for z, c in enumerate(np.bincount(numbers)) if c}
    order = sorted(counts)
    if "C" in counts:
        order = ["C"] + (["H"] if "H" in counts else []) + [s for s in order if s not in ("C", "H")]
    return "".join(s + (str(counts[s]) if counts[s] > 1 else "") for s in order)


@lru_cache(maxsize=4096)
def _composition(numbers_key: bytes) -> tuple[bytes, str] | None:
    """(uint8 bytes, formula) of an int64 atomic-number array's bytes, or None if a number is out of range."""
    numbers = np.frombuffer(numbers_key, np.int64)
    if numbers.min() < 1 or numbers.max() > MAX_Z:
        return None
    return numbers.astype(np.uint8).tobytes(), hill_formula(numbers)


def _float_bytes(value, shape: tuple[int, ...], what: str, where: str) -> bytes:
    """Little-endian float64 bytes of ``value`` after a shape check (finiteness is checked per batch)."""
    try:
        array = np.asarray(value, dtype="<f8")
    except (TypeError, ValueError):
        raise PykinmlError(f"{where}: {what} is not numeric") from None
    if array.shape != shape:
        raise PykinmlError(f"{where}: {what} has shape {array.shape}, expected {shape}")
    return array.tobytes()


def _stress_bytes(value, what: str, where: str) -> bytes:
    """Bytes of a 3×3 stress given as a 3×3 or as ASE's 6 Voigt components; a one-line error for any other shape."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PykinmlError(f"{where}: {what} is not numeric") from None
    if array.shape == (6,):  # Voigt order xx yy zz yz xz xy, as ASE stores it
        xx, yy, zz, yz, xz, xy = array
        array = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    elif array.shape != (3, 3):
        raise PykinmlError(f"{where}: {what} has shape {array.shape}, expected 6 Voigt components "
                           "(xx yy zz yz xz xy) or (3, 3)")
    return array.astype("<f8").tobytes()


def encode_frame(frame: Frame) -> EncodedFrame:
    """Check ``frame``'s elements and shapes and turn it into row bytes and a geometry hash.

    Finiteness of every float is checked for a whole batch at once by :func:`check_finite`.
    """
    where = frame.location
    numbers = np.asarray(frame.numbers)
    if numbers.ndim != 1 or numbers.size == 0 or numbers.dtype.kind not in "iu":
        raise PykinmlError(f"{where}: a structure needs a 1-D list of integer atomic numbers")
    composition = _composition(numbers.astype(np.int64, copy=False).tobytes())
    if composition is None:
        raise PykinmlError(f"{where}: atomic numbers must be 1..{MAX_Z}, got {sorted(set(numbers.tolist()))}")
    numbers_bytes, formula = composition
    natoms = numbers.size
    positions_bytes = _float_bytes(frame.positions, (natoms, 3), "positions", where)
    pbc = frame.pbc
    pbc_bits = (1 if pbc[0] else 0) | (2 if pbc[1] else 0) | (4 if pbc[2] else 0)
    cell_bytes = None
    if frame.cell is not None and (pbc_bits or np.any(frame.cell)):  # an all-zero periodic cell has zero volume
        cell_bytes = _float_bytes(frame.cell, (3, 3), "cell", where)
        if pbc_bits and abs(np.linalg.det(np.frombuffer(cell_bytes).reshape(3, 3))) < 1e-9:
            raise PykinmlError(f"{where}: periodic cell has zero volume")
    elif pbc_bits:
        raise PykinmlError(f"{where}: pbc is set but the frame has no cell")
    digest = hashlib.blake2b(numbers_bytes, digest_size=16)
    digest.update(positions_bytes)
    digest.update(cell_bytes or b"")
    digest.update(f"{pbc_bits}:{frame.charge}:{frame.multiplicity}".encode())
    labels = {}
    for level, label in frame.labels.items():
        try:
            energy = float(label.energy)
        except (TypeError, ValueError):
            raise PykinmlError(f"{where}: energy of level {level!r} is not a number: {label.energy!r}") from None
        forces = stress = None
        if label.forces is not None:
            forces = _float_bytes(label.forces, (natoms, 3), f"forces of level {level!r}", where)
        if label.stress is not None:
            stress = _stress_bytes(label.stress, f"stress of level {level!r}", where)
        labels[level] = (energy, forces, stress)
    temperature = frame.temperature
    row = (
        natoms,
        formula,
        numbers_bytes,
        positions_bytes,
        cell_bytes,
        pbc_bits,
        int(frame.charge),
        None if frame.multiplicity is None else int(frame.multiplicity),
        frame.name,
        None if temperature is None or not math.isfinite(temperature) else float(temperature),
    )
    return EncodedFrame(row=row, geometry_hash=digest.hexdigest(), labels=labels)


def _non_finite(encoded: EncodedFrame) -> str | None:
    """What in ``encoded`` is NaN or infinite, or None."""
    parts = [("positions", encoded.row[POSITIONS]), ("cell", encoded.row[CELL])]
    for level, (energy, forces, stress) in encoded.labels.items():
        if not math.isfinite(energy):
            return f"energy of level {level!r} is {energy} (NaN or infinite)"
        parts += [(f"forces of level {level!r}", forces), (f"stress of level {level!r}", stress)]
    for what, blob in parts:
        if blob is not None and not np.isfinite(np.frombuffer(blob, "<f8")).all():
            return f"{what} contain NaN or infinite values"
    return None


def check_finite(batch: list[tuple[Frame, EncodedFrame]]) -> None:
    """Raise a one-line error naming the first frame of ``batch`` with a NaN or infinite number."""
    blobs, energies = [], []
    for _, encoded in batch:
        blobs.append(encoded.row[POSITIONS])
        for energy, forces, stress in encoded.labels.values():
            energies.append(energy)
            blobs += [b for b in (forces, stress) if b is not None]
    if np.isfinite(np.frombuffer(b"".join(blobs), "<f8")).all() and np.isfinite(energies).all():
        if not any(enc.row[CELL] is not None and not np.isfinite(np.frombuffer(enc.row[CELL])).all()
                   for _, enc in batch):
            return
    for frame, encoded in batch:
        problem = _non_finite(encoded)
        if problem:
            raise PykinmlError(f"{frame.location}: {problem}")
