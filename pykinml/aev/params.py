"""AEV hyper-parameters: the original PyKinML definition from (n_rad, n_rho_ang, n_ang), and ANI presets.

Everything the AEV depends on lives in one frozen dataclass, so that it can be hashed into cache keys,
stored in checkpoints and compared when a cache or a model is reused.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from pykinml.errors import PykinmlError

# The constants as the AEV kernels take them (plain ints, floats and lists, so that TorchScript compiles the
# kernels and a scripted model stores them as one attribute). Functional syntax: TorchScript cannot resolve
# the string annotations that a class-syntax NamedTuple gets under ``from __future__ import annotations``.
AEVConstants = NamedTuple(  # noqa: UP014
    "AEVConstants",
    [
        ("n_elements", int),
        ("radial_cutoff", float),
        ("angular_cutoff", float),
        ("radial_shifts", list[float]),
        ("radial_eta", float),
        ("angular_shifts", list[float]),
        ("angular_eta", float),
        ("angle_sections", list[float]),
        ("zeta", float),
        ("beta", float),
        ("radial_scale", float),
        ("angular_scale", float),
    ],
)


def _shifts_and_eta(cutoff: float, n: int) -> tuple[tuple[float, ...], float]:
    """The original PyKinML grid: n shifts centred in n equal bins of [0, cutoff], eta = 1/((2/3)·bin)²."""
    delta = cutoff / n
    shifts = np.linspace(delta / 2, cutoff - delta / 2, n)
    return tuple(float(s) for s in shifts), float(1.0 / ((2.0 / 3.0) * delta) ** 2)


def _symbol(element: str | int) -> str:
    if isinstance(element, (int, np.integer)):
        if not 0 < int(element) < len(chemical_symbols):
            raise PykinmlError(f"unknown atomic number {element} in the AEV element list")
        return chemical_symbols[int(element)]
    if element not in atomic_numbers:
        raise PykinmlError(f"unknown element {element!r} in the AEV element list")
    return str(element)


@dataclass(frozen=True)
class AEVParams:
    """The constants of one AEV definition; the element order is the model's and fixes the AEV layout.

    Radial terms are ``radial_scale·exp(-radial_eta (r - ρ)²) f_c(r)``; angular terms are
    ``angular_scale·[(1 + cos(θ - α))/2]^zeta · exp(-angular_eta ((r_ij + r_ik)/2 - ρ)²) f_c f_c`` with
    ``θ = arccos(clip(beta·cos∠jik, -1, 1))``. The original definition has both scales 1; TorchANI's
    ANI presets use 0.25 and 2.
    """

    elements: tuple[str, ...]
    radial_cutoff: float
    angular_cutoff: float
    radial_shifts: tuple[float, ...]
    radial_eta: float
    angular_shifts: tuple[float, ...]
    angular_eta: float
    angle_sections: tuple[float, ...]
    zeta: float
    beta: float = 0.95
    radial_scale: float = 1.0
    angular_scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "elements", tuple(_symbol(e) for e in self.elements))
        for name in ("radial_shifts", "angular_shifts", "angle_sections"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if not self.elements:
            raise PykinmlError("the AEV element list is empty")
        if len(set(self.elements)) != len(self.elements):
            raise PykinmlError(f"the AEV element list {list(self.elements)} repeats an element")
        if self.radial_cutoff <= 0 or self.angular_cutoff <= 0:
            raise PykinmlError("AEV cutoffs must be positive")
        if not (self.radial_shifts and self.angular_shifts and self.angle_sections):
            raise PykinmlError("AEV shift and angle lists must not be empty")

    @classmethod
    def original(
        cls,
        elements,
        n_rad: int = 16,
        n_rho_ang: int = 8,
        n_ang: int = 8,
        cutoffs: tuple[float, float] = (5.2, 3.8),
        beta: float = 0.95,
        zeta: float = 8,
    ) -> AEVParams:
        """The original PyKinML (aevmod) definition: evenly spaced shifts, α = linspace(0, π, n_ang)."""
        for name, value in (("n_rad", n_rad), ("n_rho_ang", n_rho_ang), ("n_ang", n_ang)):
            if int(value) != value or value < 1:
                raise PykinmlError(f"AEV option {name} must be a positive integer, got {value!r}")
        if len(cutoffs) != 2:
            raise PykinmlError(f"AEV cutoffs must be (radial, angular), got {cutoffs!r}")
        radial_shifts, radial_eta = _shifts_and_eta(float(cutoffs[0]), int(n_rad))
        angular_shifts, angular_eta = _shifts_and_eta(float(cutoffs[1]), int(n_rho_ang))
        sections = tuple(float(a) for a in np.linspace(0.0, math.pi, int(n_ang)))
        return cls(
            elements=tuple(elements),
            radial_cutoff=float(cutoffs[0]),
            angular_cutoff=float(cutoffs[1]),
            radial_shifts=radial_shifts,
            radial_eta=radial_eta,
            angular_shifts=angular_shifts,
            angular_eta=angular_eta,
            angle_sections=sections,
            zeta=float(zeta),
            beta=float(beta),
        )

    @classmethod
    def preset(cls, name: str, elements=None) -> AEVParams:
        """TorchANI's ANI-1x (H, C, N, O) or ANI-2x (H, C, N, O, S, F, Cl) constants, NeuroChem scaling."""
        if name not in PRESETS:
            raise PykinmlError(f"unknown AEV preset {name!r}; choose one of {sorted(PRESETS)}")
        values = dict(PRESETS[name])
        if elements is not None:
            values["elements"] = tuple(elements)
        return cls(**values)

    @property
    def n_elements(self) -> int:
        return len(self.elements)

    @property
    def n_pairs(self) -> int:
        return self.n_elements * (self.n_elements + 1) // 2

    @property
    def radial_length(self) -> int:
        return len(self.radial_shifts)

    @property
    def angular_length(self) -> int:
        """Length of one element pair's angular block: shifts × angle sections."""
        return len(self.angular_shifts) * len(self.angle_sections)

    @property
    def length(self) -> int:
        return self.n_elements * self.radial_length + self.n_pairs * self.angular_length

    @property
    def max_cutoff(self) -> float:
        return max(self.radial_cutoff, self.angular_cutoff)

    @property
    def atomic_numbers(self) -> tuple[int, ...]:
        return tuple(atomic_numbers[e] for e in self.elements)

    def constants(self) -> AEVConstants:
        """The constants as the TorchScript-compatible kernels take them (see :data:`AEVConstants`)."""
        return AEVConstants(
            n_elements=self.n_elements,
            radial_cutoff=float(self.radial_cutoff),
            angular_cutoff=float(self.angular_cutoff),
            radial_shifts=list(self.radial_shifts),
            radial_eta=float(self.radial_eta),
            angular_shifts=list(self.angular_shifts),
            angular_eta=float(self.angular_eta),
            angle_sections=list(self.angle_sections),
            zeta=float(self.zeta),
            beta=float(self.beta),
            radial_scale=float(self.radial_scale),
            angular_scale=float(self.angular_scale),
        )

    def to_dict(self) -> dict:
        return asdict(self) | {"elements": list(self.elements)}

    @classmethod
    def from_dict(cls, values: dict) -> AEVParams:
        return cls(**values)

    def fingerprint(self) -> str:
        """A stable hash of every constant (floats by their exact repr), for cache keys and checks."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _ani_preset(elements, rc_rad, rc_ang, eta_r, shf_r, eta_a, zeta, shf_a, n_sections) -> dict:
    sections = np.linspace(0.0, math.pi, n_sections + 1)[:-1] + math.pi / (2 * n_sections)
    return {
        "elements": elements,
        "radial_cutoff": rc_rad,
        "angular_cutoff": rc_ang,
        "radial_shifts": tuple(float(v) for v in shf_r),
        "radial_eta": eta_r,
        "angular_shifts": tuple(float(v) for v in shf_a),
        "angular_eta": eta_a,
        "angle_sections": tuple(float(v) for v in sections),
        "zeta": zeta,
        "beta": 0.95,
        "radial_scale": 0.25,
        "angular_scale": 2.0,
    }


PRESETS: dict[str, dict] = {
    "ani1x": _ani_preset(
        ("H", "C", "N", "O"), 5.2, 3.5, 16.0, np.linspace(0.9, 5.2, 17)[:-1],
        8.0, 32.0, np.linspace(0.9, 3.5, 5)[:-1], 8,
    ),
    "ani2x": _ani_preset(
        ("H", "C", "N", "O", "S", "F", "Cl"), 5.1, 3.5, 19.7, np.linspace(0.8, 5.1, 17)[:-1],
        12.5, 14.1, np.linspace(0.8, 3.5, 9)[:-1], 4,
    ),
}
