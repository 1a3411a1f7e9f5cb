"""Extended XYZ frames as text, a frame per string: ASE's layout and number formats (``ase.io.read`` reads them
back as the same info, arrays and results), with the columns formatted in one step instead of ASE's loop
over atoms, which took most of ``pykinml-predict``'s time on small molecules. Constraints (ASE's
``move_mask`` column) are not written: predictions carry none.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.io.extxyz import PROPERTY_NAME_MAP, key_val_dict_to_str

# dtype kind → extxyz property type and the format ASE writes it with
_COLUMN_FORMATS = {
    "f": ("R", "%16.8f"),
    "i": ("I", "%8d"),
    "U": ("S", "%-2s"),
    "S": ("S", "%s"),
    "O": ("S", "%s"),
    "b": ("L", " %.1s"),
}
_SYMBOLS = np.array(chemical_symbols)


def _numbers(values: np.ndarray) -> str:
    """Space-separated shortest round-trip text of a float array (ASE's form for vectors in the header)."""
    return " ".join(repr(float(value)) for value in values)


def frame_text(atoms: Atoms, info: dict, arrays: dict[str, np.ndarray], values: dict[str, float | np.ndarray]) -> str:
    """One extxyz frame: species, positions and the per-atom ``arrays`` as columns; in the header the cell,
    ``info`` (formatted by ASE's own key=value writer) and ``values`` (floats, and (3, 3) arrays such as
    stress, written exactly), then pbc."""
    natoms = len(atoms)
    columns = {"species": _SYMBOLS[atoms.numbers], "pos": atoms.positions, **arrays}
    properties, formats, blocks = [], [], []
    for name, array in columns.items():
        kind, fmt = _COLUMN_FORMATS[array.dtype.kind]
        width = array.size // natoms if natoms else 1
        properties.append(f"{PROPERTY_NAME_MAP.get(name, name)}:{kind}:{width}")
        formats.extend([fmt] * width)
        blocks.append(array.reshape(natoms, width))
    table = np.empty((natoms, len(formats)), dtype=object)  # the cells row by row, as Python objects
    start = 0
    for block in blocks:
        table[:, start : start + block.shape[1]] = block
        start += block.shape[1]
    flat = table.ravel().tolist()
    header = []
    if atoms.cell.any():
        header.append(f'Lattice="{_numbers(atoms.cell.array.reshape(9))}"')
    header.append("Properties=" + ":".join(properties))
    if info:
        header.append(key_val_dict_to_str(info))
    for key, value in values.items():
        if isinstance(value, np.ndarray):  # ASE's 3×3 keys (stress, virial) are flattened in Fortran order
            header.append(f'{key}="{_numbers(value.reshape(value.size, order="F"))}"')
        else:
            header.append(f"{key}={float(value)!r}")
    header.append('pbc="' + " ".join("T" if p else "F" for p in atoms.pbc) + '"')
    line = " ".join(formats) + "\n"
    return f"{natoms}\n{' '.join(header)}\n" + (line * natoms) % tuple(flat)
