"""Frames from the pymatgen-style JSON of the mlearn and SNAP data sets (materialsvirtuallab/mlearn, .../snap).

The file is a JSON list; each item holds ``structure`` (a pymatgen ``Structure`` dict: ``lattice.matrix`` with
the lattice vectors as rows in Å, ``sites`` with ``species[0].element``, Cartesian ``xyz`` in Å and fractional
``abc``) and ``outputs``: ``energy`` (eV per cell), ``forces`` (eV/Å, N × 3) and ``virial_stress`` (``stress``
in the SNAP Ni–Mo files): 6 numbers in kbar, in the order xx, yy, zz, xy, xz, yz, with VASP's sign (positive =
compressive). Stress is stored in ASE's convention (σ = (1/V) ∂E/∂ε, tensile positive) as a 3×3 in eV/Å³.
Every frame is periodic along all three lattice vectors; index = the 0-based position of the item in the list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
from ase.data import atomic_numbers

from ...errors import PykinmlError
from ...units import KBAR_EV_A3
from ..frames import Frame, LevelLabel

MLEARN = "mlearn-json"
STRESS_KEYS = ("virial_stress", "stress")
#: Largest accepted difference (Å) between a site's ``xyz`` and ``abc @ lattice.matrix``.
XYZ_TOLERANCE = 1e-4
#: Where each of the file's 6 stress components goes in the 3×3 tensor: xx, yy, zz, xy, xz, yz. Found on the
#: Mo Elastic group: cells sheared in the xy plane (mode 4) have only component 3 large, cells whose b vector
#: gains a z component (yz, mode 5) only component 5, cells whose a vector gains a z component (xz, mode 6)
#: only component 4; a cell compressed along x has a large positive component 0 (VASP's sign).
STRESS_ORDER = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
_PEEK_CHARS = 1 << 16  # first read when looking for the first item; doubled until it decodes
_PEEK_LIMIT = 1 << 26  # a first item larger than this is not looked for (--format mlearn-json still reads it)


def _first_list_item(path: str) -> object | None:
    """The first element of a JSON list file, decoded on its own so that detection does not parse the whole file."""
    decoder = json.JSONDecoder()
    text = ""
    size = _PEEK_CHARS
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        while len(text) < _PEEK_LIMIT:
            chunk = handle.read(size)
            text += chunk
            body = text.lstrip()
            if body and body[0] != "[":
                return None
            body = body[1:].lstrip()
            if body:
                try:
                    return decoder.raw_decode(body)[0]
                except json.JSONDecodeError:
                    pass
            if not chunk:
                return None
            size *= 2
    return None


def looks_like_mlearn(path: str) -> bool:
    """Whether ``path`` is a JSON list whose first item has ``structure`` (with lattice and sites) and ``outputs``."""
    item = _first_list_item(path)
    if not isinstance(item, dict):
        return False
    structure = item.get("structure")
    return (isinstance(structure, dict) and "lattice" in structure and "sites" in structure
            and isinstance(item.get("outputs"), dict))


def _load(path: str) -> list:
    """The whole file as a list (one ``json.load``); a one-line error if it is not JSON or not a list."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            items = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PykinmlError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise PykinmlError(f"{path}: expected a JSON list of structures, got a {type(items).__name__}")
    return items


def _numeric(value, shape: tuple[int, ...] | None, what: str, where: str) -> np.ndarray:
    """``value`` as a float64 array, with a one-line error if it is not numbers (or not of ``shape``, if given)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PykinmlError(f"{where}: {what} is not a list of numbers") from None
    if shape is not None and array.shape != shape:
        raise PykinmlError(f"{where}: {what} has shape {array.shape}, expected {shape}")
    return array


def stress_from_kbar(values, what: str, where: str) -> np.ndarray:
    """ASE-convention 3×3 stress in eV/Å³ from the file's 6 kbar components (xx, yy, zz, xy, xz, yz; VASP sign)."""
    components = _numeric(values, None, what, where)
    if components.shape != (6,):
        raise PykinmlError(f"{where}: {what} has {components.size} components, expected 6 "
                           "(xx, yy, zz, xy, xz, yz in kbar)")
    tensor = np.zeros((3, 3))
    for value, (i, j) in zip(components, STRESS_ORDER):
        tensor[i, j] = tensor[j, i] = value
    return -KBAR_EV_A3 * tensor  # VASP: positive = compressive; ASE: positive = tensile


def _lattice(structure: dict, where: str) -> np.ndarray:
    """``lattice.matrix`` (rows = lattice vectors, Å); its volume is checked by ``encode_frame``."""
    lattice = structure.get("lattice")
    if not isinstance(lattice, dict) or lattice.get("matrix") is None:
        raise PykinmlError(f"{where}: structure.lattice.matrix is missing")
    return _numeric(lattice["matrix"], (3, 3), "structure.lattice.matrix", where)


def _element(site, k: int, where: str) -> int:
    """Atomic number of an ordered site (one species, occupancy 1)."""
    species = site.get("species") if isinstance(site, dict) else None
    if not isinstance(species, list) or not species or not isinstance(species[0], dict):
        raise PykinmlError(f"{where}: site {k} has no species")
    if len(species) > 1 or species[0].get("occu", 1) != 1:
        raise PykinmlError(f"{where}: site {k} is partially occupied; only ordered structures can be imported")
    symbol = species[0].get("element")
    if not isinstance(symbol, str) or atomic_numbers.get(symbol, 0) == 0:
        raise PykinmlError(f"{where}: site {k}: unknown element symbol {symbol!r}")
    return atomic_numbers[symbol]


def _positions(sites: list, matrix: np.ndarray, where: str) -> np.ndarray:
    """Cartesian positions (Å): ``xyz``, checked against ``abc @ matrix``; ``abc @ matrix`` when there is no xyz."""
    if all("xyz" in site for site in sites):
        xyz = _numeric([site["xyz"] for site in sites], (len(sites), 3), "the sites' xyz", where)
    elif any("xyz" in site for site in sites):
        k = next(k for k, site in enumerate(sites) if "xyz" not in site)
        raise PykinmlError(f"{where}: site {k} has no xyz unlike other sites")
    else:
        xyz = None
    if not all("abc" in site for site in sites):
        if xyz is None:
            raise PykinmlError(f"{where}: the sites have neither xyz nor abc coordinates")
        return xyz
    abc = _numeric([site["abc"] for site in sites], (len(sites), 3), "the sites' abc", where)
    from_abc = abc @ matrix
    if xyz is None:
        return from_abc
    error = np.abs(xyz - from_abc).max(axis=1)
    k = int(np.argmax(error))
    if error[k] > XYZ_TOLERANCE:  # NaN compares False here and is refused later as non-finite
        raise PykinmlError(f"{where}: site {k}: xyz {xyz[k].tolist()} differs from abc @ lattice.matrix "
                           f"{from_abc[k].round(6).tolist()} by {error[k]:.3g} Å")
    return xyz


def _label(outputs, where: str) -> LevelLabel:
    """Energy, forces and stress of an item's ``outputs``; shapes of forces are checked by ``encode_frame``."""
    if not isinstance(outputs, dict):
        raise PykinmlError(f"{where}: outputs is missing or not a dict")
    if outputs.get("energy") is None:
        raise PykinmlError(f"{where}: outputs.energy is missing")
    forces = outputs.get("forces")
    if forces is not None:
        forces = _numeric(forces, None, "outputs.forces", where)
    key = next((key for key in STRESS_KEYS if outputs.get(key) is not None), None)
    stress = None if key is None else stress_from_kbar(outputs[key], f"outputs.{key}", where)
    return LevelLabel(energy=outputs["energy"], forces=forces, stress=stress)


def _name(item: dict, name: str | None, default_name: str) -> str:
    """``--name``, else ``<element>-<group>`` (e.g. ``Mo-Elastic``; either part may be absent), else the file stem."""
    if name:
        return name
    parts = [str(item[key]) for key in ("element", "group") if item.get(key) not in (None, "")]
    return "-".join(parts) or default_name


def _charge(structure: dict, where: str) -> int:
    """The structure's total charge (pymatgen writes 0 or null)."""
    charge = structure.get("charge") or 0
    if isinstance(charge, bool) or not isinstance(charge, (int, float)) or not float(charge).is_integer():
        raise PykinmlError(f"{where}: structure.charge {charge!r} is not an integer")
    return int(charge)


def frame_from_item(item, index: int, where: str, level: str, name: str | None, default_name: str) -> Frame:
    """A periodic :class:`Frame` with one level of labels from one item of the list."""
    if not isinstance(item, dict) or not isinstance(item.get("structure"), dict):
        raise PykinmlError(f"{where}: expected a dict with a pymatgen structure")
    structure = item["structure"]
    sites = structure.get("sites")
    if not isinstance(sites, list) or not sites or not all(isinstance(site, dict) for site in sites):
        raise PykinmlError(f"{where}: structure.sites must be a non-empty list of sites")
    if item.get("num_atoms") is not None and item["num_atoms"] != len(sites):
        raise PykinmlError(f"{where}: num_atoms is {item['num_atoms']} but the structure has {len(sites)} sites")
    matrix = _lattice(structure, where)
    return Frame(
        numbers=np.array([_element(site, k, where) for k, site in enumerate(sites)], dtype=np.int64),
        positions=_positions(sites, matrix, where),
        cell=matrix,
        pbc=(True, True, True),
        name=_name(item, name, default_name),
        charge=_charge(structure, where),
        source_index=index,
        location=where,
        labels={level: _label(item.get("outputs"), where)},
    )


def _present(label: LevelLabel) -> tuple[bool, bool]:
    """Which optional labels (forces, stress) a frame has."""
    return label.forces is not None, label.stress is not None


def read_mlearn(path: str, level: str, name: str | None, default_name: str) -> Iterator[Frame]:
    """Yield one frame per item of the mlearn/SNAP JSON list at ``path``; every item must carry the same labels."""
    expected = None
    for index, item in enumerate(_load(path)):
        where = f"{path}: item {index}"
        frame = frame_from_item(item, index, where, level, name, default_name)
        present = _present(frame.labels[level])
        if expected is None:
            expected = present
        elif present != expected:
            what = "forces" if present[0] != expected[0] else "stress"
            state = "has" if present[what == "stress"] else "lacks"
            raise PykinmlError(f"{where}: this item {state} {what} unlike item 0")
        yield frame
