"""Test-only reference AEVs: TorchANI 2.9 configured with our constants, and a slow direct numpy evaluation.

Our convention (the original PyKinML / aevmod definition), for atom i:

* cutoff: f_c(r; R_c) = 1/2 cos(pi r / R_c) + 1/2 for r <= R_c, else 0;
* radial, per neighbour element s and shift rho_k:
  G^R[s, k] = sum_{j of element s} exp(-eta_R (r_ij - rho_k)^2) f_c(r_ij; R_c,rad)
  (no 0.25 prefactor);
* angular, per unordered element pair (s1 <= s2), shift rho_m and section alpha_l:
  G^A[(s1, s2), m, l] = sum_{unordered {j, k}} [1/2 + 1/2 cos(theta_ijk - alpha_l)]^zeta
  * exp(-eta_A ((r_ij + r_ik)/2 - rho_m)^2) f_c(r_ij; R_c,ang) f_c(r_ik; R_c,ang)
  with theta_ijk = arccos(beta cos(angle jik)), beta = 0.95 (no factor 2);
* layout: radial blocks per element (in the order of ``elements``), then angular blocks per
  unordered element pair in upper-triangular order ((0,0), (0,1), ..., (1,1), ...), inside a block
  the (angular) radial shift is the outer index and the angle section the inner one.

TorchANI (NeuroChem convention) computes 0.25 * our radial terms and 2 * our angular terms
(``ANIRadial.compute``: ``0.25 * exp(...)``; ``ANIAngular.compute_cos_angles``:
``2 * ((1 + cos(theta - alpha)) / 2) ** zeta`` and ``acos(0.95 * cos_angles)`` with 0.95 hard-coded),
and uses the same layout (``AEVComputer._collect_radial`` / ``_collect_angular``, ``triu_index``).
:func:`torchani_aev` undoes the prefactors; :func:`torchani_preset_aev` does not.

Positions and cells are in Angstrom, cells as rows of lattice vectors (ASE's convention). TorchANI is
imported lazily, so :func:`reference_aev_numpy` and :func:`original_constants` work without it; tests
that need TorchANI should ``pytest.importorskip("torchani")`` first.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np

#: The factor TorchANI 2.9 multiplies our radial terms with (``ANIRadial.compute``).
TORCHANI_RADIAL_PREFACTOR = 0.25
#: The factor TorchANI 2.9 multiplies our angular terms with (``ANIAngular.compute_cos_angles``).
TORCHANI_ANGULAR_PREFACTOR = 2.0
#: The factor inside TorchANI's arccos, hard-coded in ``ANIAngular.compute_cos_angles``.
TORCHANI_BETA = 0.95
#: The AEV constants that TorchANI's builtin models use: AEVComputer(radial=NAME, angular=NAME).
PRESETS = ("ani1x", "ani2x")

PbcArg = bool | Sequence[bool]


# --------------------------------------------------------------------------------------------------
# constants
# --------------------------------------------------------------------------------------------------


def original_constants(
    elements: Sequence[str] = ("H", "C", "N", "O"),
    *,
    n_rad: int = 16,
    n_ang_rad: int = 8,
    n_ang: int = 8,
    rc_rad: float = 5.2,
    rc_ang: float = 3.8,
    zeta: float = 8.0,
    beta: float = 0.95,
) -> dict:
    """Constants of the original PyKinML/aevmod definition, as keyword arguments for the AEV functions.

    Delta = R_c / n, shifts = linspace(Delta/2, R_c - Delta/2, n), eta = 1 / ((2/3) Delta)^2,
    sections = linspace(0, pi, n_ang) with both endpoints.
    """
    d_rad = rc_rad / n_rad
    d_ang = rc_ang / n_ang_rad
    return {
        "elements": tuple(elements),
        "rc_rad": float(rc_rad),
        "rc_ang": float(rc_ang),
        "radial_shifts": np.linspace(d_rad / 2, rc_rad - d_rad / 2, n_rad),
        "radial_eta": 1.0 / ((2.0 / 3.0) * d_rad) ** 2,
        "angular_shifts": np.linspace(d_ang / 2, rc_ang - d_ang / 2, n_ang_rad),
        "angular_eta": 1.0 / ((2.0 / 3.0) * d_ang) ** 2,
        "angle_sections": np.linspace(0.0, math.pi, n_ang),
        "zeta": float(zeta),
        "beta": float(beta),
    }


def aev_length(n_elements: int, n_radial_shifts: int, n_angular_shifts: int, n_sections: int) -> int:
    """D = S * n_rad + S (S + 1) / 2 * n_ang_rad * n_sections."""
    return n_elements * n_radial_shifts + n_elements * (n_elements + 1) // 2 * n_angular_shifts * n_sections


def _element_indices(species_symbols: Sequence[str], elements: Sequence[str]) -> np.ndarray:
    index = {e: i for i, e in enumerate(elements)}
    if len(index) != len(elements):
        raise ValueError(f"repeated element in {tuple(elements)}")
    missing = sorted(set(species_symbols) - set(index))
    if missing:
        raise ValueError(f"species {missing} are not among the elements {tuple(elements)}")
    return np.array([index[s] for s in species_symbols], dtype=np.int64)


def _pbc_flags(cell: np.ndarray | None, pbc: PbcArg) -> tuple[bool, bool, bool]:
    flags = (bool(pbc),) * 3 if isinstance(pbc, bool | np.bool_) else tuple(bool(p) for p in pbc)
    if len(flags) != 3:
        raise ValueError(f"pbc must be a bool or 3 bools, got {pbc!r}")
    if any(flags) and cell is None:
        raise ValueError("a periodic structure needs a cell")
    return flags


def _check_positions(positions: np.ndarray, n: int) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (n, 3):
        raise ValueError(f"positions must have shape ({n}, 3), got {pos.shape}")
    return pos


# --------------------------------------------------------------------------------------------------
# direct numpy evaluation (the independent check)
# --------------------------------------------------------------------------------------------------


def _cutoff(r: float, rc: float) -> float:
    return 0.5 * math.cos(math.pi * r / rc) + 0.5 if r <= rc else 0.0


def _neighbours(
    i: int, pos: np.ndarray, cell: np.ndarray | None, flags: tuple[bool, bool, bool], rc: float
) -> list[tuple[int, np.ndarray, float]]:
    """All (j, r_ij vector, r_ij) with r_ij <= rc, j over every periodic image, except i itself unshifted."""
    out = []
    if not any(flags):
        for j in range(len(pos)):
            if j != i:
                v = pos[j] - pos[i]
                r = float(np.linalg.norm(v))
                if r <= rc:
                    out.append((j, v, r))
        return out
    cell = np.asarray(cell, dtype=np.float64)
    inv = np.linalg.inv(cell)  # columns: reciprocal vectors b_a with a_c . b_a = delta_ca
    frac = pos @ inv
    # |r| <= rc implies |(f_j - f_i + n)_a| <= rc |b_a| for every axis a
    reach = rc * np.linalg.norm(inv, axis=0)
    for j in range(len(pos)):
        d = frac[j] - frac[i]
        ranges = [
            range(math.floor(-d[a] - reach[a]) - 1, math.ceil(-d[a] + reach[a]) + 2) if flags[a] else range(1)
            for a in range(3)
        ]
        for n in itertools.product(*ranges):
            if j == i and n == (0, 0, 0):
                continue
            v = pos[j] - pos[i] + np.asarray(n, dtype=np.float64) @ cell
            r = float(np.linalg.norm(v))
            if r <= rc:
                out.append((j, v, r))
    return out


def reference_aev_numpy(
    species_symbols: Sequence[str],
    positions: np.ndarray,
    elements: Sequence[str],
    *,
    rc_rad: float,
    rc_ang: float,
    radial_shifts: Sequence[float],
    radial_eta: float,
    angular_shifts: Sequence[float],
    angular_eta: float,
    angle_sections: Sequence[float],
    zeta: float,
    beta: float = 0.95,
    cell: np.ndarray | None = None,
    pbc: PbcArg = False,
) -> np.ndarray:
    """Our AEV, (N, D) float64, by plain loops over i, j, k (slow; for small test structures only).

    With a periodic cell the sums run over all images of every atom within the cutoff (images of i
    itself included), excluding only i itself in the home cell.
    """
    elem = _element_indices(species_symbols, elements)
    pos = _check_positions(positions, len(elem))
    flags = _pbc_flags(cell, pbc)
    n_el = len(elements)
    shf_r = np.asarray(radial_shifts, dtype=np.float64)
    shf_a = np.asarray(angular_shifts, dtype=np.float64)
    sec = np.asarray(angle_sections, dtype=np.float64)
    n_r, n_a, n_s = len(shf_r), len(shf_a), len(sec)
    pair_index = {}
    for p, (s1, s2) in enumerate(itertools.combinations_with_replacement(range(n_el), 2)):
        pair_index[s1, s2] = pair_index[s2, s1] = p
    radial_len = n_el * n_r
    aev = np.zeros((len(elem), aev_length(n_el, n_r, n_a, n_s)), dtype=np.float64)

    for i in range(len(elem)):
        nbrs = _neighbours(i, pos, cell, flags, max(rc_rad, rc_ang))
        for j, _v, r in nbrs:
            if r <= rc_rad:
                start = elem[j] * n_r
                aev[i, start : start + n_r] += np.exp(-radial_eta * (r - shf_r) ** 2) * _cutoff(r, rc_rad)
        ang = [(j, v, r) for j, v, r in nbrs if r <= rc_ang]
        for a in range(len(ang)):
            j, v_ij, r_ij = ang[a]
            for b in range(a + 1, len(ang)):
                k, v_ik, r_ik = ang[b]
                cos_jik = float(np.dot(v_ij, v_ik)) / (r_ij * r_ik)
                theta = math.acos(beta * cos_jik)
                f = _cutoff(r_ij, rc_ang) * _cutoff(r_ik, rc_ang)
                rad = np.exp(-angular_eta * (0.5 * (r_ij + r_ik) - shf_a) ** 2)  # (n_a,)
                ang_part = (0.5 + 0.5 * np.cos(theta - sec)) ** zeta  # (n_s,)
                start = radial_len + pair_index[elem[j], elem[k]] * n_a * n_s
                aev[i, start : start + n_a * n_s] += (np.outer(rad, ang_part) * f).ravel()
    return aev


# --------------------------------------------------------------------------------------------------
# TorchANI 2.9
# --------------------------------------------------------------------------------------------------


def _torchani_aev_module():
    """``torchani.aev`` (2.9), imported without the warning about its missing compiled extensions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchani
        import torchani.aev
    version = getattr(torchani, "__version__", "?")
    if not version.startswith("2.9"):
        raise RuntimeError(f"tests/torchani_reference.py is written against torchani 2.9, found {version}")
    return torchani.aev


def _set_exact_constants(term, **values) -> None:
    """Replace a term's float32 buffers (TorchANI stores its constants as float32) by exact float64 ones."""
    import torch

    for name, value in values.items():
        old = getattr(term, name)
        new = torch.as_tensor(np.asarray(value, dtype=np.float64).reshape(old.shape), dtype=torch.float64)
        setattr(term, name, new)  # nn.Module.__setattr__ keeps registered buffers registered


def _torchani_pbc_flags(cell: np.ndarray | None, pbc: PbcArg) -> tuple[bool, bool, bool]:
    flags = _pbc_flags(cell, pbc)
    if any(flags) and not all(flags):
        # torchani.utils.map_to_central wraps all fractional coordinates and then restores the
        # *Cartesian* components whose index is non-periodic: wrong for non-orthogonal cells.
        raise NotImplementedError(
            f"pbc={flags}: TorchANI 2.9 handles partial periodicity wrongly for general cells"
        )
    return flags


def _run_computer(computer, elem: np.ndarray, pos: np.ndarray, cell, flags) -> np.ndarray:
    import torch

    species_t = torch.as_tensor(elem, dtype=torch.long).unsqueeze(0)
    coords_t = torch.as_tensor(pos, dtype=torch.float64).unsqueeze(0)
    cell_t = pbc_t = None
    if any(flags):
        cell_t = torch.as_tensor(np.asarray(cell, dtype=np.float64), dtype=torch.float64)
        pbc_t = torch.tensor(flags, dtype=torch.bool)
    with torch.no_grad():
        out = computer(species_t, coords_t, cell=cell_t, pbc=pbc_t)
    return out[0].detach().cpu().numpy().astype(np.float64, copy=True)


def _exact_terms(
    aev, *, rc_rad, rc_ang, radial_shifts, radial_eta, angular_shifts, angular_eta, angle_sections, zeta
):
    radial = aev.ANIRadial(
        float(radial_eta), [float(x) for x in radial_shifts], float(rc_rad), cutoff_fn="cosine"
    )
    angular = aev.ANIAngular(
        float(angular_eta),
        float(zeta),
        [float(x) for x in angular_shifts],
        [float(x) for x in angle_sections],
        float(rc_ang),
        cutoff_fn="cosine",
    )
    radial.double()
    angular.double()
    _set_exact_constants(radial, eta=[radial_eta], shifts=radial_shifts)
    _set_exact_constants(
        angular, eta=[angular_eta], zeta=[zeta], shifts=angular_shifts, sections=angle_sections
    )
    return radial, angular


def _computer(aev, radial, angular, n_el: int):
    return aev.AEVComputer(
        radial, angular, num_species=n_el, strategy="pyaev", neighborlist="all_pairs"
    ).double()


def torchani_aev(
    species_symbols: Sequence[str],
    positions: np.ndarray,
    elements: Sequence[str],
    *,
    rc_rad: float,
    rc_ang: float,
    radial_shifts: Sequence[float],
    radial_eta: float,
    angular_shifts: Sequence[float],
    angular_eta: float,
    angle_sections: Sequence[float],
    zeta: float,
    beta: float = 0.95,
    cell: np.ndarray | None = None,
    pbc: PbcArg = False,
) -> np.ndarray:
    """TorchANI 2.9's AEV with exactly these constants, in float64, rescaled to our convention.

    Built from ``AEVComputer(ANIRadial(...), ANIAngular(...), num_species, strategy="pyaev",
    neighborlist="all_pairs")`` with cosine cutoffs, its float32 constant buffers replaced by the
    exact float64 values. TorchANI hard-codes beta = 0.95, so any other beta raises ValueError.
    AEVComputer requires rc_ang < rc_rad; otherwise the radial and angular blocks are taken from two
    computers (the angular one with a larger, unused radial cutoff: the angular terms only see
    neighbours within rc_ang).
    """
    if beta != TORCHANI_BETA:
        raise ValueError(f"TorchANI 2.9 hard-codes acos({TORCHANI_BETA} cos); beta={beta!r} is not supported")
    aev = _torchani_aev_module()
    elem = _element_indices(species_symbols, elements)
    pos = _check_positions(positions, len(elem))
    flags = _torchani_pbc_flags(cell, pbc)
    n_el = len(elements)
    consts = {
        "rc_rad": rc_rad,
        "rc_ang": rc_ang,
        "radial_shifts": radial_shifts,
        "radial_eta": radial_eta,
        "angular_shifts": angular_shifts,
        "angular_eta": angular_eta,
        "angle_sections": angle_sections,
        "zeta": zeta,
    }
    radial_len = n_el * len(radial_shifts)
    if rc_ang < rc_rad:
        radial, angular = _exact_terms(aev, **consts)
        out = _run_computer(_computer(aev, radial, angular, n_el), elem, pos, cell, flags)
    else:
        # AEVComputer asserts angular cutoff < radial cutoff: split into two computers.
        r_exact, a_dummy = _exact_terms(aev, **{**consts, "rc_ang": 0.5 * rc_rad})
        r_dummy, a_exact = _exact_terms(aev, **{**consts, "rc_rad": rc_ang + 1.0})
        rad = _run_computer(_computer(aev, r_exact, a_dummy, n_el), elem, pos, cell, flags)[:, :radial_len]
        ang = _run_computer(_computer(aev, r_dummy, a_exact, n_el), elem, pos, cell, flags)[:, radial_len:]
        out = np.concatenate([rad, ang], axis=1)
    out[:, :radial_len] /= TORCHANI_RADIAL_PREFACTOR
    out[:, radial_len:] /= TORCHANI_ANGULAR_PREFACTOR
    return out


def _preset_terms(name: str):
    """TorchANI's own preset terms, and the float64 constants its constructors were called with."""
    if name not in PRESETS:
        raise ValueError(f"unknown TorchANI preset {name!r}; known: {PRESETS}")
    aev = _torchani_aev_module()
    seen: dict[str, tuple] = {}

    class _Radial(aev.ANIRadial):
        def __init__(self, eta, shifts, cutoff, cutoff_fn="cosine"):
            seen["radial"] = (eta, tuple(shifts), cutoff, cutoff_fn)
            super().__init__(eta, shifts, cutoff, cutoff_fn)

    class _Angular(aev.ANIAngular):
        def __init__(self, eta, zeta, shifts, sections, cutoff, cutoff_fn="cosine"):
            seen["angular"] = (eta, zeta, tuple(shifts), tuple(sections), cutoff, cutoff_fn)
            super().__init__(eta, zeta, shifts, sections, cutoff, cutoff_fn)

    # the same classmethods that AEVComputer(radial=name, angular=name) and the builtin models call
    ctor = "like_1x" if name == "ani1x" else "like_2x"
    getattr(_Radial, ctor)()
    getattr(_Angular, ctor)()
    from torchani.aev._terms import _parse_angular_term, _parse_radial_term
    from torchani.utils import SYMBOLS_1X, SYMBOLS_2X

    radial, angular = _parse_radial_term(name), _parse_angular_term(name)
    return aev, radial, angular, seen, (SYMBOLS_1X if name == "ani1x" else SYMBOLS_2X)


def torchani_preset_constants(name: str) -> dict:
    """The exact AEV constants of TorchANI 2.9's builtin 'ani1x' / 'ani2x' models.

    Read from TorchANI's own constructors (``ANIRadial.like_1x()`` etc., the terms that
    ``AEVComputer(radial=name, angular=name)`` builds), as the Python floats they are called with:
    TorchANI then stores them as float32 buffers. Elements are ``torchani.utils.SYMBOLS_1X`` /
    ``SYMBOLS_2X`` (the builtin models' element order). Keys match the keyword arguments of
    :func:`torchani_aev` / :func:`reference_aev_numpy`, so ``torchani_aev(sym, pos, **constants)``
    works; the values are in TorchANI's definitions but, being constants, need no rescaling.
    """
    _, radial, angular, seen, symbols = _preset_terms(name)
    r_eta, r_shifts, r_cut, r_fn = seen["radial"]
    a_eta, a_zeta, a_shifts, a_sections, a_cut, a_fn = seen["angular"]
    if r_fn != "cosine" or a_fn != "cosine":
        raise RuntimeError(f"unexpected cutoff functions {r_fn!r}, {a_fn!r} in TorchANI preset {name}")
    # the captured values are the ones in the preset's float32 buffers
    for term, attr, value in (
        (radial, "shifts", r_shifts),
        (radial, "eta", [r_eta]),
        (angular, "shifts", a_shifts),
        (angular, "sections", a_sections),
        (angular, "eta", [a_eta]),
        (angular, "zeta", [a_zeta]),
    ):
        if not np.array_equal(getattr(term, attr).numpy(), np.asarray(value, dtype=np.float32)):
            raise RuntimeError(
                f"TorchANI preset {name}: {attr} buffer differs from its constructor arguments"
            )
    if radial.cutoff != r_cut or angular.cutoff != a_cut:
        raise RuntimeError(f"TorchANI preset {name}: cutoffs differ from its constructor arguments")
    return {
        "elements": tuple(symbols),
        "rc_rad": float(r_cut),
        "rc_ang": float(a_cut),
        "radial_shifts": np.asarray(r_shifts, dtype=np.float64),
        "radial_eta": float(r_eta),
        "angular_shifts": np.asarray(a_shifts, dtype=np.float64),
        "angular_eta": float(a_eta),
        "angle_sections": np.asarray(a_sections, dtype=np.float64),
        "zeta": float(a_zeta),
        "beta": TORCHANI_BETA,
    }


def torchani_preset_aev(
    name: str,
    species_symbols: Sequence[str],
    positions: np.ndarray,
    cell: np.ndarray | None = None,
    pbc: PbcArg = False,
    *,
    exact_constants: bool = True,
) -> np.ndarray:
    """TorchANI 2.9's builtin 'ani1x' / 'ani2x' AEV, (N, D) float64, in TorchANI's own convention (unscaled).

    The computer is ``AEVComputer(radial=name, angular=name, num_species, cutoff_fn="cosine")``, as the
    builtin models assemble it (no network weights are needed or downloaded), evaluated in float64.
    With ``exact_constants`` (default) its float32 constant buffers are replaced by the float64 values
    TorchANI constructs them from (see :func:`torchani_preset_constants`); with ``exact_constants=False``
    the float32-rounded constants are kept, which is what ``torchani.models.ANI1x().double()`` uses.
    """
    aev, radial, angular, seen, symbols = _preset_terms(name)
    elem = _element_indices(species_symbols, symbols)
    pos = _check_positions(positions, len(elem))
    flags = _torchani_pbc_flags(cell, pbc)
    radial.double()
    angular.double()
    if exact_constants:
        r_eta, r_shifts, *_ = seen["radial"]
        a_eta, a_zeta, a_shifts, a_sections, *_ = seen["angular"]
        _set_exact_constants(radial, eta=[r_eta], shifts=r_shifts)
        _set_exact_constants(angular, eta=[a_eta], zeta=[a_zeta], shifts=a_shifts, sections=a_sections)
    computer = aev.AEVComputer(
        radial,
        angular,
        num_species=len(symbols),
        strategy="pyaev",
        cutoff_fn="cosine",
        neighborlist="all_pairs",
    ).double()
    return _run_computer(computer, elem, pos, cell, flags)
