"""Turning ASE's per-frame dictionaries (info, arrays, calculator results) into level labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import PykinmlError
from ..frames import LevelLabel


@dataclass(frozen=True)
class LevelKeys:
    """``--level NAME=ENERGY_KEY[,FORCES_KEY[,STRESS_KEY]]``: where a level's labels live in each frame."""

    name: str
    energy: str
    forces: str | None = None
    stress: str | None = None

    #: A bare ``--level NAME`` reads the keys ``pykinml-db export`` writes: NAME_energy, and NAME_forces and
    #: NAME_stress when the first frame has them.
    bare: bool = False

    @classmethod
    def parse(cls, text: str) -> LevelKeys:
        name, sep, keys = text.partition("=")
        if not sep and name.strip():
            name = name.strip()
            return cls(name, f"{name}_energy", f"{name}_forces", f"{name}_stress", bare=True)
        parts = [part.strip() for part in keys.split(",")]
        if not name.strip() or not parts[0] or len(parts) > 3 or any(not p for p in parts):
            raise PykinmlError(f"--level {text!r}: expected NAME=ENERGY_KEY[,FORCES_KEY[,STRESS_KEY]] or NAME")
        return cls(name.strip(), *parts)


@dataclass(frozen=True)
class Units:
    """Factors that bring a file's energies and forces to eV and eV/Å."""

    energy: float = 1.0
    forces: float = 1.0


def _lookup(key: str, *sources: dict):
    for source in sources:
        if key in source and source[key] is not None:
            return source[key]
    return None


class LabelExtractor:
    """Reads the labels of successive frames and insists that every frame carries the same ones."""

    def __init__(self, levels: list[LevelKeys], default_level: str, units: Units):
        names = [level.name for level in levels]
        if len(set(names)) != len(names):
            raise PykinmlError(f"--level names must be unique, got {names}")
        self.levels = levels
        self.default_level = default_level
        self.units = units
        self._expected: tuple | None = None  # (has energy, has forces, has stress) of the first frame, default mode
        self._bare_keys: dict[str, LevelKeys] = {}  # bare --level NAME: the keys the first frame has

    def __call__(self, info: dict, arrays: dict, results: dict, where: str) -> dict[str, LevelLabel]:
        if self.levels:
            return {level.name: self._mapped(self._resolved(level, info, arrays, results), info, arrays, results, where)
                    for level in self.levels}
        return self._from_results(results, where)

    def _resolved(self, level: LevelKeys, info: dict, arrays: dict, results: dict) -> LevelKeys:
        """A bare level's optional forces/stress keys are fixed by the first frame, then required of every frame."""
        if not level.bare:
            return level
        if level.name not in self._bare_keys:
            self._bare_keys[level.name] = LevelKeys(
                level.name,
                level.energy,
                level.forces if level.forces in arrays or level.forces in results else None,
                level.stress if level.stress in info or level.stress in results else None,
            )
        return self._bare_keys[level.name]

    def _value(self, key: str, sources: tuple, level: str, where: str):
        value = _lookup(key, *sources)
        if value is None:
            raise PykinmlError(f"{where}: key {key!r} of level {level!r} is missing from this frame")
        return value

    def _mapped(self, level: LevelKeys, info, arrays, results, where) -> LevelLabel:
        energy = self._value(level.energy, (info, results), level.name, where)
        forces = stress = None
        if level.forces:
            forces = self._value(level.forces, (arrays, results, info), level.name, where)
        if level.stress:
            stress = self._value(level.stress, (info, results), level.name, where)
        return self._scaled(energy, forces, stress, level.name, where)

    def _from_results(self, results: dict, where: str) -> dict[str, LevelLabel]:
        present = tuple(results.get(key) is not None for key in ("energy", "forces", "stress"))
        if self._expected is None:
            self._expected = present
        elif present != self._expected:
            what = [k for k, a, b in zip(("energy", "forces", "stress"), present, self._expected) if a != b]
            state = "lacks" if not present[("energy", "forces", "stress").index(what[0])] else "has"
            raise PykinmlError(f"{where}: this frame {state} {what[0]} unlike the first frame; use --level to map keys")
        if not present[0]:
            if present[1] or present[2]:
                raise PykinmlError(f"{where}: forces or stress without an energy")
            return {}
        return {self.default_level: self._scaled(results["energy"], results.get("forces"), results.get("stress"),
                                                 self.default_level, where)}

    def _scaled(self, energy, forces, stress, level: str, where: str) -> LevelLabel:
        try:
            energy = float(energy) * self.units.energy
        except (TypeError, ValueError):
            raise PykinmlError(f"{where}: energy of level {level!r} is not a number: {energy!r}") from None
        if forces is not None:
            try:
                forces = np.asarray(forces, dtype=np.float64) * self.units.forces
            except (TypeError, ValueError):
                raise PykinmlError(f"{where}: forces of level {level!r} are not numeric") from None
        return LevelLabel(energy=energy, forces=forces, stress=None if stress is None else np.asarray(stress))
