"""Regenerate the bundled demo dataset: examples/data/demo.extxyz and the packaged pykinml/demo/demo.db.

Needs `pip install tblite` (used only here, not a pykinml dependency).

Distorted geometries of a few small closed-shell C/H/N/O molecules from ase's g2 set, each labelled at
two levels of tight-binding theory: GFN1-xTB ("gfn1", the cheap level) and GFN2-xTB ("gfn2", the higher
one). Energies in eV, forces in eV/Å. The extxyz file is the human-readable source; the database is
built from it with `pykinml-db import`.

    python examples/make_demo_db.py            # writes examples/data/demo.extxyz, pykinml/demo/demo.db
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.collections import g2

from pykinml.units import BOHR_ANGSTROM as BOHR_ANG
from pykinml.units import HARTREE_EV

MOLECULES = ("CH4", "H2O", "NH3", "C2H4", "CH3OH", "CH3CH2OH")
METHODS = {"gfn1": "GFN1-xTB", "gfn2": "GFN2-xTB"}
SIGMA = 0.08  # Å, std of the Gaussian displacement of every coordinate
MIN_DISTANCE = 0.7  # Å, geometries with a closer pair are discarded
FD_STEP = 1e-4  # Å


def xtb(method: str, numbers: np.ndarray, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/Å) of a neutral closed-shell molecule from tblite at `method`."""
    from tblite.interface import Calculator

    calc = Calculator(method, numbers, positions / BOHR_ANG, charge=0, uhf=0)
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    energy = float(res.get("energy")) * HARTREE_EV
    forces = -np.asarray(res.get("gradient")) * (HARTREE_EV / BOHR_ANG)
    return energy, forces


def distorted(name: str, count: int, rng: np.random.Generator) -> list[Atoms]:
    """`count` copies of g2 molecule `name` with Gaussian-displaced atoms, none with atoms closer than 0.7 Å."""
    base = molecule(name)
    frames: list[Atoms] = []
    while len(frames) < count:
        atoms = base.copy()
        atoms.positions += rng.normal(scale=SIGMA, size=atoms.positions.shape)
        dist = atoms.get_all_distances()[np.triu_indices(len(atoms), k=1)]
        if dist.min() >= MIN_DISTANCE:
            atoms.info["name"] = name
            frames.append(atoms)
    return frames


def label(frames: list[Atoms]) -> None:
    """Attach `<level>_energy` (info) and `<level>_forces` (arrays) for both levels to every frame, in place."""
    for atoms in frames:
        for level, method in METHODS.items():
            energy, forces = xtb(method, atoms.numbers, atoms.positions)
            atoms.info[f"{level}_energy"] = energy
            atoms.arrays[f"{level}_forces"] = forces


def build_db(extxyz: Path, db: Path) -> None:
    """Import `extxyz` into a fresh `db` with the project's own `pykinml-db import`, as a user would."""
    if db.exists():
        db.unlink()
    # Prefer the pykinml-db next to this interpreter (an unactivated venv), else the one on PATH.
    exe = shutil.which(
        "pykinml-db", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    if exe is None:
        sys.exit("pykinml-db not found: pip install -e . (in the pykinml checkout)")
    cmd = [exe, "import", str(extxyz), "--db", str(db)]
    for level in METHODS:
        cmd += ["--level", f"{level}={level}_energy,{level}_forces"]
    split = [exe, "split", "--db", str(db), "--name", "default", "--fractions", "0.8", "0.1", "0.1", "--seed", "0"]
    for command in (cmd, split):
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)


def fd_deviation(method: str, atoms: Atoms, forces: np.ndarray) -> float:
    """Max |F - (-dE/dx)| over all coordinates of `atoms`, central differences with step 1e-4 Å."""
    worst = 0.0
    for i in range(len(atoms)):
        for k in range(3):
            shifted = []
            for sign in (1.0, -1.0):
                pos = atoms.positions.copy()
                pos[i, k] += sign * FD_STEP
                shifted.append(xtb(method, atoms.numbers, pos)[0])
            worst = max(worst, abs(forces[i, k] + (shifted[0] - shifted[1]) / (2 * FD_STEP)))
    return worst


def sanity(frames: list[Atoms]) -> None:
    """Print per-molecule level differences and a finite-difference check of the force sign and units."""
    print(
        f"{'molecule':<10} {'n':>4} {'std(E2-E1) eV':>14} {'mean(E2-E1) eV':>15} {'corr(F1,F2)':>12} {'rms F2 eV/Å':>12}"
    )
    for name in MOLECULES:
        group = [a for a in frames if a.info["name"] == name]
        de = np.array([a.info["gfn2_energy"] - a.info["gfn1_energy"] for a in group])
        f1 = np.concatenate([a.arrays["gfn1_forces"].ravel() for a in group])
        f2 = np.concatenate([a.arrays["gfn2_forces"].ravel() for a in group])
        corr = np.corrcoef(f1, f2)[0, 1]
        rms = np.sqrt(np.mean(f2**2))
        print(f"{name:<10} {len(group):>4} {de.std():>14.4f} {de.mean():>15.3f} {corr:>12.4f} {rms:>12.3f}")
    probe = next(a for a in frames if a.info["name"] == MOLECULES[-1])
    for level, method in METHODS.items():
        dev = fd_deviation(method, probe, probe.arrays[f"{level}_forces"])
        print(
            f"finite-difference check, {level}, {probe.info['name']} (all {3 * len(probe)} components, "
            f"h={FD_STEP} Å): max |F + dE/dx| = {dev:.2e} eV/Å"
        )


def main(argv: list[str] | None = None) -> None:
    """Generate, label, write and import the demo dataset, then print the sanity check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "data",
                        help="where demo.extxyz goes")
    parser.add_argument("--db", type=Path, default=Path(__file__).resolve().parent.parent / "pykinml" / "demo" / "demo.db",
                        help="the database built from it (default: the one shipped in the package)")
    parser.add_argument("--per-molecule", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)
    # One OpenMP thread (read when tblite loads): threaded sums change last bits, so the extxyz is byte-reproducible.
    os.environ["OMP_NUM_THREADS"] = "1"

    start = time.perf_counter()
    assert all(name in g2.names for name in MOLECULES)
    rng = np.random.default_rng(args.seed)
    frames = [atoms for name in MOLECULES for atoms in distorted(name, args.per_molecule, rng)]
    label(frames)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    extxyz = args.out_dir / "demo.extxyz"
    db = args.db
    ase.io.write(extxyz, frames, format="extxyz")
    build_db(extxyz, db)
    for path in (extxyz, db):
        print(f"{path}: {path.stat().st_size / 1e6:.2f} MB")
    sanity(frames)
    print(f"{len(frames)} frames, {len(MOLECULES)} molecules, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
