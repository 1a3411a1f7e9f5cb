"""What ``pykinml-predict`` writes and reports: extxyz / CSV / JSON writers, one frame at a time, and error sums.

extxyz frames carry the prediction as their results (``energy``, ``forces``, ``stress``: what
``atoms.get_potential_energy()`` returns after ``ase.io.read``) and every level of a multi-fidelity model as
``<level>_energy`` / ``<level>_forces``; the input's own info and arrays are kept, renamed ``input_<key>``
where a prediction takes their name. CSV and JSON hold energies only.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from typing import IO

import numpy as np
from ase import Atoms

from pykinml.errors import PykinmlError
from pykinml.extxyz_text import frame_text
from pykinml.units import KCAL_MOL_EV

FORMATS = ("extxyz", "csv", "json")
_RESERVED = {"energy", "free_energy", "forces", "stress", "numbers", "positions"}


@dataclass
class FramePrediction:
    """One frame's prediction: the main target, other targets by name, and the reference labels if any."""

    atoms: Atoms
    source: str
    frame: int
    energy: float
    forces: np.ndarray | None
    stress: np.ndarray | None  # (3, 3) eV/Å³ for a periodic frame
    extra_energies: dict[str, float] = field(default_factory=dict)
    extra_forces: dict[str, np.ndarray] = field(default_factory=dict)
    reference_energy: float | None = None
    reference_forces: np.ndarray | None = None

    def record(self) -> dict:
        """The CSV/JSON row: where the frame came from and its energies in eV."""
        row = {
            "source": self.source,
            "frame": self.frame,
            "formula": self.atoms.get_chemical_formula(),
            "natoms": len(self.atoms),
            "energy": self.energy,
        }
        row.update({f"{name}_energy": value for name, value in self.extra_energies.items()})
        if self.reference_energy is not None:
            row["reference_energy"] = self.reference_energy
        return row


def output_format(path: str, given: str | None) -> str:
    """``--format`` or the output file's suffix: .csv, .json, anything else extxyz."""
    if given:
        if given not in FORMATS:
            raise PykinmlError(f"--format {given}: choose one of {', '.join(FORMATS)}")
        return given
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return suffix if suffix in ("csv", "json") else "extxyz"


def _output_frame(prediction: FramePrediction) -> str:
    """The extxyz text of the input frame's atoms, info and arrays with the prediction in the keys extxyz reads
    back as results; the input's own keys that a prediction's name takes are renamed ``input_<key>``."""
    atoms = prediction.atoms
    values: dict = {f"{name}_energy": value for name, value in prediction.extra_energies.items()}
    values["energy"] = prediction.energy
    if prediction.stress is not None:
        values["stress"] = prediction.stress
    predicted = {f"{name}_forces": value for name, value in prediction.extra_forces.items()}
    if prediction.forces is not None:
        predicted["forces"] = prediction.forces
    taken = _RESERVED | set(values) | set(predicted)
    info = {(f"input_{key}" if key in taken else key): value for key, value in atoms.info.items()}
    arrays = {(f"input_{key}" if key in taken else key): value for key, value in atoms.arrays.items()
              if key not in ("numbers", "positions")}
    return frame_text(atoms, info, {**arrays, **predicted}, values)


class PredictionWriter:
    """Streams predictions into an open text handle in one of :data:`FORMATS`."""

    def __init__(self, handle: IO[str], fmt: str):
        self.handle, self.fmt = handle, fmt
        self._csv: csv.DictWriter | None = None
        self._count = 0

    def write(self, prediction: FramePrediction) -> None:
        if self.fmt == "extxyz":
            self.handle.write(_output_frame(prediction))
        elif self.fmt == "csv":
            row = prediction.record()
            if self._csv is None:
                self._csv = csv.DictWriter(self.handle, fieldnames=list(row), lineterminator="\n")
                self._csv.writeheader()
            self._csv.writerow(row)
        else:
            self.handle.write(("[\n" if self._count == 0 else ",\n") + json.dumps(prediction.record()))
        self._count += 1

    def close(self) -> None:
        if self.fmt == "json":
            self.handle.write("[]\n" if self._count == 0 else "\n]\n")


@dataclass
class ErrorSums:
    """Running sums for energy and force MAE/RMSE against reference labels (eV, eV/Å)."""

    frames: int = 0
    energy_abs: float = 0.0
    energy_sq: float = 0.0
    per_atom_sq: float = 0.0
    force_frames: int = 0
    force_components: int = 0
    force_abs: float = 0.0
    force_sq: float = 0.0

    def add(self, prediction: FramePrediction) -> None:
        if prediction.reference_energy is not None:
            error = prediction.energy - prediction.reference_energy
            self.frames += 1
            self.energy_abs += abs(error)
            self.energy_sq += error**2
            self.per_atom_sq += (error / len(prediction.atoms)) ** 2
        if prediction.reference_forces is not None and prediction.forces is not None:
            error = prediction.forces - prediction.reference_forces
            self.force_frames += 1
            self.force_components += error.size
            self.force_abs += float(np.abs(error).sum())
            self.force_sq += float((error**2).sum())

    def summary(self, key: str) -> list[str]:
        """Printable lines: energy and force MAE/RMSE in eV (kcal/mol) and meV/atom, eV/Å (kcal/mol/Å)."""
        lines = []
        if self.frames:
            mae, rmse = self.energy_abs / self.frames, math.sqrt(self.energy_sq / self.frames)
            per_atom = 1000 * math.sqrt(self.per_atom_sq / self.frames)
            lines.append(
                f"against {key} ({self.frames} frames): energy MAE {mae:.5f} eV ({mae / KCAL_MOL_EV:.3f} kcal/mol), "
                f"RMSE {rmse:.5f} eV ({rmse / KCAL_MOL_EV:.3f} kcal/mol, {per_atom:.2f} meV/atom)"
            )
        if self.force_components:
            mae = self.force_abs / self.force_components
            rmse = math.sqrt(self.force_sq / self.force_components)
            lines.append(
                f"against {key} forces ({self.force_frames} frames): force MAE {mae:.5f} eV/Å "
                f"({mae / KCAL_MOL_EV:.3f} kcal/mol/Å), RMSE {rmse:.5f} eV/Å ({rmse / KCAL_MOL_EV:.3f} kcal/mol/Å)"
            )
        return lines

    def as_dict(self) -> dict[str, float]:
        out = {}
        if self.frames:
            out["energy_mae_ev"] = self.energy_abs / self.frames
            out["energy_rmse_ev"] = math.sqrt(self.energy_sq / self.frames)
        if self.force_components:
            out["force_mae_ev_a"] = self.force_abs / self.force_components
            out["force_rmse_ev_a"] = math.sqrt(self.force_sq / self.force_components)
        return out
