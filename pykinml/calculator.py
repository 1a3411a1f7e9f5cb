"""An ASE calculator on top of :mod:`pykinml.predict`: energy, forces and (periodic cells) stress from a model file.

The model file alone is enough (checkpoint, run directory or exported model): AEV constants, elements and
self atomic energies are stored in it. A delta model predicts a correction to a low level of theory, so
its calculator wraps an ASE calculator for that level (``baseline=``) and returns the sum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from pykinml.errors import PykinmlError
from pykinml.molecule import MAX_ATOMS, MoleculePotential
from pykinml.predict import Model, load_model


class PykinmlCalculator(Calculator):
    """ASE calculator for a pykinml model: ``atoms.calc = PykinmlCalculator("runs/single-…")``.

    ``level`` picks the target of a multi-fidelity model (default: the highest level). Computes in
    float64 by default, so forces are the exact derivative of the energy that MD conserves.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: str | Path | Model,
        baseline: Calculator | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float64",
        level: str | None = None,
        compile: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.model = model if isinstance(model, Model) else load_model(model, device=device, dtype=dtype)
        self.compile = compile  # TorchScript: calls take less time (the first few take up to ~1 s)
        if compile:
            self.model = self.model.compiled()
        if self.model.is_delta and baseline is None:
            raise PykinmlError(
                f"{self.model.source} is a delta model ({self.model.names[0]}): give baseline=<an ASE calculator for "
                f"{self.model.levels[0]}>, the level it corrects"
            )
        if baseline is not None and not self.model.is_delta:
            raise PykinmlError(f"{self.model.source}: baseline= is only for delta models (this one is {self.model.fidelity})")
        self.baseline = baseline
        self._molecule_potential: MoleculePotential | None = None
        names = self.model.names
        if level is None:
            self.target = len(names) - 1
        elif level in names:
            self.target = names.index(level)
        else:
            raise PykinmlError(f"level={level!r}: this model predicts {', '.join(names)}")

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """What changed since the last calculation, as ASE's check (positions, numbers, cell, pbc, charges,
        magnetic moments) but by exact equality: ASE's per-array ``isclose`` took a third of a small molecule's call."""
        old = self.atoms
        if old is None:
            return list(all_changes)
        changes = [name for name in ("cell", "pbc") if not np.array_equal(getattr(old, name), getattr(atoms, name))]
        for name in all_changes:
            if name in old.arrays or name in atoms.arrays:
                same = name in old.arrays and name in atoms.arrays and np.array_equal(old.arrays[name], atoms.arrays[name])
                if not same:
                    changes.append(name)
        return changes

    def _molecule(self, atoms: Atoms) -> MoleculePotential:
        """The per-molecule evaluator for these atoms, built on the first call and again when they change."""
        if self._molecule_potential is None or not np.array_equal(self._molecule_potential.numbers, atoms.numbers):
            self.model.check_elements(atoms, "atoms")
            self._molecule_potential = MoleculePotential(self.model, atoms.numbers, compile=self.compile)
        return self._molecule_potential

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.any(atoms.pbc))
        wants_stress = "stress" in properties
        if wants_stress and not periodic:
            raise PykinmlError("stress needs a periodic cell (atoms.pbc is all False)")
        stress = None
        if not periodic and len(atoms) <= MAX_ATOMS:
            energies, all_forces = self._molecule(atoms)(atoms.positions)
            energy, forces = float(energies[self.target]), all_forces[self.target]
        else:
            predictions = self.model.predict([atoms], forces=True, stress=wants_stress or periodic, where="atoms")
            energy = float(predictions.energies[self.target, 0])
            forces = predictions.forces[0][self.target].copy()
            stress = predictions.stress[self.target, 0].copy() if predictions.stress is not None and periodic else None
        if self.baseline is not None:
            low = atoms.copy()
            low.calc = self.baseline
            energy += float(low.get_potential_energy())
            forces += low.get_forces()
            if stress is not None:
                stress = stress + low.get_stress(voigt=False)
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["forces"] = forces
        if stress is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)

