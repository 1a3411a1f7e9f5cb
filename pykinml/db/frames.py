"""The record every importer yields (one geometry with its labels), its validation and its byte encoding."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

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


@dataclass
class EncodedFrame:
    """A validated frame as the bytes and scalars that go into the ``structure`` table."""

    row: dict
    geometry_hash: str
    labels: dict[str, tuple[float, bytes | None, bytes | None]]


def hill_formula(numbers: np.ndarray) -> str:
    """Hill-order formula (C, H, then alphabetical; alphabetical when there is no carbon)."""
    from ase.data import chemical_symbols

    counts: dict[str, int] = {}
    for z in numbers.tolist():
        symbol = chemical_symbols[z]
        counts[symbol] = counts.get(symbol, 0) + 1
    order = sorted(counts)
    if "C" in counts:
        order = ["C"] + (["H"] if "H" in counts else []) + [s for s in order if s not in ("C", "H")]
    return "".join(s + (str(counts[s]) if counts[s] > 1 else "") for s in order)


def _finite_array(value, shape: tuple[int, ...], what: str, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PykinmlError(f"{where}: {what} is not numeric") from None
    if array.shape != shape:
        raise PykinmlError(f"{where}: {what} has shape {array.shape}, expected {shape}")
    if not np.all(np.isfinite(array)):
        raise PykinmlError(f"{where}: {what} contains NaN or infinite values")
    return np.ascontiguousarray(array, dtype="<f8")


def _stress_matrix(value, where: str, level: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape == (6,):  # Voigt order xx yy zz yz xz xy, as ASE stores it
        xx, yy, zz, yz, xz, xy = array
        array = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return _finite_array(array, (3, 3), f"stress of level {level!r}", where)


def encode_frame(frame: Frame) -> EncodedFrame:
    """Validate ``frame`` (elements, shapes, finite values, cell) and turn it into row bytes and a geometry hash."""
    where = frame.location
    numbers = np.asarray(frame.numbers)
    if numbers.ndim != 1 or numbers.size == 0:
        raise PykinmlError(f"{where}: a structure needs at least one atom")
    if not np.issubdtype(numbers.dtype, np.integer) or numbers.min() < 1 or numbers.max() > MAX_Z:
        raise PykinmlError(f"{where}: atomic numbers must be 1..{MAX_Z}, got {sorted(set(numbers.tolist()))}")
    natoms = numbers.size
    positions = _finite_array(frame.positions, (natoms, 3), "positions", where)
    pbc_bits = sum(1 << k for k, periodic in enumerate(frame.pbc) if periodic)
    cell_bytes = None
    if frame.cell is not None and np.any(np.asarray(frame.cell) != 0):
        cell = _finite_array(frame.cell, (3, 3), "cell", where)
        if pbc_bits and abs(np.linalg.det(cell)) < 1e-9:
            raise PykinmlError(f"{where}: periodic cell has zero volume")
        cell_bytes = cell.tobytes()
    elif pbc_bits:
        raise PykinmlError(f"{where}: pbc is set but the frame has no cell")
    numbers_bytes = numbers.astype(np.uint8).tobytes()
    positions_bytes = positions.tobytes()
    digest = hashlib.blake2b(digest_size=16)
    for part in (numbers_bytes, positions_bytes, cell_bytes or b"", bytes([pbc_bits])):
        digest.update(part)
    digest.update(f"{frame.charge}:{frame.multiplicity}".encode())
    labels = {}
    for level, label in frame.labels.items():
        energy = label.energy
        try:
            energy = float(energy)
        except (TypeError, ValueError):
            raise PykinmlError(f"{where}: energy of level {level!r} is not a number: {energy!r}") from None
        if not np.isfinite(energy):
            raise PykinmlError(f"{where}: energy of level {level!r} is {energy} (NaN or infinite)")
        forces = None
        if label.forces is not None:
            forces = _finite_array(label.forces, (natoms, 3), f"forces of level {level!r}", where).tobytes()
        stress = None
        if label.stress is not None:
            stress = _stress_matrix(label.stress, where, level).tobytes()
        labels[level] = (energy, forces, stress)
    temperature = frame.temperature
    if temperature is not None and not np.isfinite(temperature):
        temperature = None
    row = {
        "natoms": natoms,
        "formula": hill_formula(numbers),
        "numbers": numbers_bytes,
        "positions": positions_bytes,
        "cell": cell_bytes,
        "pbc": pbc_bits,
        "charge": int(frame.charge),
        "multiplicity": None if frame.multiplicity is None else int(frame.multiplicity),
        "name": frame.name,
        "temperature": None if temperature is None else float(temperature),
    }
    return EncodedFrame(row=row, geometry_hash=digest.hexdigest(), labels=labels)
