"""What a model is trained to predict: one target per model output, each a level or a difference of two.

Single fidelity: one target, the level's energy and forces. Delta: E_high − E_low and F_high − F_low,
defined only where both labels exist. Chained multi-fidelity: one target per level, low → high; a
structure that lacks a level simply has no label for that target (masked out of its loss and metrics).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pykinml.db.query import Selection


@dataclass(frozen=True)
class TargetSpec:
    """``level`` minus ``minus`` (``None``: the level itself); ``name`` labels metrics and logs."""

    name: str
    level: str
    minus: str | None = None


@dataclass
class Targets:
    """Targets of every structure of a selection, stacked over the model outputs (T of them)."""

    energies: np.ndarray  # (T, n) float64, eV; NaN where absent
    energy_mask: np.ndarray  # (T, n) bool
    forces: np.ndarray  # (T, n_atoms, 3) float64, eV/Å; NaN where absent
    force_mask: np.ndarray  # (T, n) bool
    stress: np.ndarray | None = None  # (T, n, 3, 3) float64, eV/Å³ (ASE's sign); None unless trained on
    stress_mask: np.ndarray | None = None  # (T, n) bool


def build_targets(selection: Selection, specs: list[TargetSpec], forces: bool, stress: bool = False) -> Targets:
    """Evaluate ``specs`` on ``selection`` (its energies and, with ``forces``/``stress``, its forces/stress)."""
    n, n_atoms = len(selection), int(selection.offsets[-1])
    energies, energy_mask, force_values, force_mask, stress_values, stress_mask = [], [], [], [], [], []
    for spec in specs:
        energy = selection.energies[spec.level].copy()
        has = selection.has_energy[spec.level].copy()
        force = selection.forces[spec.level].copy() if forces else np.full((n_atoms, 3), np.nan)
        has_force = selection.has_forces[spec.level].copy() if forces else np.zeros(n, bool)
        sigma = selection.stress[spec.level].copy() if stress else None
        has_stress = selection.has_stress[spec.level].copy() if stress else None
        if spec.minus is not None:
            energy -= selection.energies[spec.minus]
            has &= selection.has_energy[spec.minus]
            if forces:
                force -= selection.forces[spec.minus]
                has_force &= selection.has_forces[spec.minus]
            if stress:
                sigma -= selection.stress[spec.minus]
                has_stress &= selection.has_stress[spec.minus]
        energies.append(np.where(has, energy, np.nan))
        energy_mask.append(has)
        force_values.append(force)
        force_mask.append(has_force & has if forces else has_force)
        if stress:
            stress_values.append(sigma)
            stress_mask.append(has_stress & has)
    return Targets(
        np.stack(energies), np.stack(energy_mask), np.stack(force_values), np.stack(force_mask),
        np.stack(stress_values) if stress else None, np.stack(stress_mask) if stress else None,
    )
