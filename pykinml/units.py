"""Unit conversions at the edges: pykinml works in eV and Å inside; Hartree, Bohr, kcal/mol, GPa and kbar live here only."""

from __future__ import annotations

from .errors import PykinmlError

# CODATA 2018.
HARTREE_EV = 27.211386245988
BOHR_ANGSTROM = 0.529177210903
AVOGADRO = 6.02214076e23
ELEMENTARY_CHARGE = 1.602176634e-19
KCAL_MOL_EV = 4184.0 / (AVOGADRO * ELEMENTARY_CHARGE)
KJ_MOL_EV = 1000.0 / (AVOGADRO * ELEMENTARY_CHARGE)
EV_A3_GPA = ELEMENTARY_CHARGE * 1e21  # 1 eV/Å³ in GPa
KBAR_GPA = 0.1
KBAR_EV_A3 = KBAR_GPA / EV_A3_GPA  # 1 kbar in eV/Å³

#: Factors that turn an energy given in the named unit into eV.
ENERGY_UNITS: dict[str, float] = {
    "ev": 1.0,
    "hartree": HARTREE_EV,
    "kcal/mol": KCAL_MOL_EV,
    "kj/mol": KJ_MOL_EV,
}

#: Factors that turn a force given in the named unit into eV/Å.
FORCE_UNITS: dict[str, float] = {
    "ev/a": 1.0,
    "hartree/bohr": HARTREE_EV / BOHR_ANGSTROM,
    "hartree/a": HARTREE_EV,
    "kcal/mol/a": KCAL_MOL_EV,
    "kj/mol/a": KJ_MOL_EV,
}

#: The force unit that goes with an energy unit when only ``--units`` is given.
DEFAULT_FORCE_UNIT = {"ev": "ev/a", "hartree": "hartree/bohr", "kcal/mol": "kcal/mol/a", "kj/mol": "kj/mol/a"}


def energy_factor(unit: str) -> float:
    """Factor from ``unit`` to eV; raises a one-line error for an unknown unit."""
    key = unit.strip().lower().replace("å", "a").replace("ang", "a")
    if key not in ENERGY_UNITS:
        raise PykinmlError(f"unknown energy unit {unit!r}; choose one of {', '.join(ENERGY_UNITS)}")
    return ENERGY_UNITS[key]


def force_factor(unit: str) -> float:
    """Factor from ``unit`` to eV/Å; raises a one-line error for an unknown unit."""
    key = unit.strip().lower().replace("å", "a").replace("angstrom", "a")
    if key not in FORCE_UNITS:
        raise PykinmlError(f"unknown force unit {unit!r}; choose one of {', '.join(FORCE_UNITS)}")
    return FORCE_UNITS[key]

