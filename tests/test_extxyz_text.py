"""pykinml's extxyz frame writer against ASE's: the same text, byte for byte, and the same frames read back."""

from __future__ import annotations

import io

import ase.io
import numpy as np
from ase import Atoms
from ase.io.extxyz import write_xyz

from pykinml.extxyz_text import frame_text

DEMO_XYZ = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples" / "data" / "demo.extxyz"


def ase_text(atoms: Atoms) -> str:
    handle = io.StringIO()
    write_xyz(handle, atoms, write_results=False)
    return handle.getvalue()


def frames() -> list[Atoms]:
    """Demo molecules with their labels, and a periodic cell with every column type and a stress."""
    rng = np.random.default_rng(0)
    molecules = ase.io.read(DEMO_XYZ, "0:600:97")
    cell = Atoms("Cu4H", positions=rng.uniform(0, 3.6, (5, 3)), cell=[[3.6, 0, 0], [0.1, 3.7, 0], [0, 0.2, 3.9]],
                 pbc=[True, True, False])
    cell.info.update(name="slab one", step=12, converged=True, dipole=np.array([0.1, -2.5e-7, 3.0]))
    cell.arrays.update(charges_q=rng.normal(size=5), tag_i=np.arange(5), fixed=np.array([True, False] * 2 + [True]),
                       label=np.array(["a", "bb", "c", "dd", "e"]), vec=rng.normal(size=(5, 3)))
    return [*molecules, cell]


def test_frame_text_is_what_ase_writes_and_reads_back_the_same():
    for atoms in frames():
        forces = np.random.default_rng(len(atoms)).normal(size=(len(atoms), 3))
        values = {"model_energy": -1234.5678901234567, "energy": -98.76543210987654}
        if atoms.pbc.any():
            values["stress"] = (np.arange(9.0).reshape(3, 3) + np.arange(9.0).reshape(3, 3).T) / 7  # symmetric, as ASE reads it
        arrays = {k: v for k, v in atoms.arrays.items() if k not in ("numbers", "positions")}
        ours = frame_text(atoms, dict(atoms.info), {**arrays, "forces": forces}, values)
        reference = atoms.copy()
        reference.info.update(values)
        reference.arrays["forces"] = forces
        assert ours == ase_text(reference)
        back = ase.io.read(io.StringIO(ours), format="extxyz")
        assert back.get_potential_energy() == values["energy"] and back.info["model_energy"] == values["model_energy"]
        np.testing.assert_allclose(back.get_forces(), forces, atol=5e-9)
        np.testing.assert_array_equal(back.positions.round(8), atoms.positions.round(8))
        assert back.cell.array.tolist() == atoms.cell.array.tolist() and back.pbc.tolist() == atoms.pbc.tolist()
        if "stress" in values:
            np.testing.assert_array_equal(back.get_stress(voigt=False), values["stress"])
