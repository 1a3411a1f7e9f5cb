"""Energies (eV) and forces (eV/Å) of one molecule from a trained model, two ways.

1. ``pykinml.predict.load_model``: a run directory, checkpoint or exported model becomes a ``Model``
   whose ``predict(list_of_atoms)`` returns energies and forces of every target (one per level for a
   multi-fidelity model) for a batch of ``ase.Atoms``.
2. ``pykinml.calculator.PykinmlCalculator``: the same model as an ASE calculator
   (``atoms.get_potential_energy()``, ``atoms.get_forces()``), ready for ASE's optimizers and MD.

The molecule is, by default, the first ethanol of the demo database's test split (so its stored
GFN1/GFN2-xTB labels show how close the model is); ``--xyz`` reads any file ASE reads and
``--molecule`` builds one from ASE's g2 set. Without ``--model`` it takes the newest run under
``runs/`` (e.g. the one ``examples/train_single_fid.py`` just wrote) or, when there is none, first
trains a small single-fidelity model on the demo database (30 epochs, about half a minute on 2 CPU cores).

    python examples/run_model.py                                  # the newest run in runs/, or a new small one
    python examples/run_model.py --model runs/single-20250101-120000
    python examples/run_model.py --model runs/x/checkpoints/best.ckpt --molecule CH3OH
    python examples/run_model.py --model runs/x --xyz geometry.xyz --index -1
"""

from __future__ import annotations

import argparse
import logging
import warnings

import numpy as np
from example_args import run_main

from pykinml.errors import PykinmlError
from pykinml.units import KCAL_MOL_EV


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a run directory, checkpoint or exported model "
                                        "(default: the newest run under runs/, else a small demo model trained first)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--xyz", help="read the molecule from this file (any format ASE reads)")
    source.add_argument("--molecule", help="build the molecule from ASE's g2 set, e.g. CH3CH2OH, H2O")
    parser.add_argument("--index", type=int, default=0, help="which frame of --xyz, or which match in the database (default 0)")
    parser.add_argument("--db", help="take the molecule from this database (default: the bundled demo database)")
    parser.add_argument("--name", default="CH3CH2OH", help="structure name in the database (default: CH3CH2OH)")
    parser.add_argument("--split", default="default", help="split of the database (default: default)")
    parser.add_argument("--subset", default="test", choices=("train", "val", "test"), help="subset of the split (default: test)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the demo model trained without --model (default: 30)")
    return parser.parse_args(argv)


def train_demo_model(epochs: int) -> str:
    """A small single-fidelity gfn2 model on the demo database; returns its run directory."""
    from pykinml.config import compose_config
    from pykinml.train import train

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    print(f"no --model given: training a small gfn2 model on the demo database first ({epochs} epochs)", flush=True)
    result = train(compose_config(["model.neurons=[64,32]", f"trainer.max_epochs={epochs}", "trainer.progress_bar=false"]))
    print()
    return str(result.run_dir)


def newest_run() -> str | None:
    """The most recently finished run directory under ./runs (one with checkpoints/best.ckpt), if any."""
    from pathlib import Path

    runs = [p.parent.parent for p in Path("runs").glob("*/checkpoints/best.ckpt")]
    return str(max(runs, key=lambda run: (run / "checkpoints" / "best.ckpt").stat().st_mtime)) if runs else None


def molecule_and_reference(args: argparse.Namespace, levels: list[str]):
    """The ase.Atoms to evaluate, and its stored labels {level: (energy, forces)} when it comes from a database."""
    if args.xyz:
        import ase.io

        atoms = ase.io.read(args.xyz, index=args.index)
        return atoms, f"{args.xyz}, frame {args.index}", {}
    if args.molecule:
        from ase.build import molecule

        return molecule(args.molecule), f"{args.molecule} (ASE's g2 geometry)", {}
    from pykinml.db import open_engine, select_structures
    from pykinml.demo import DEMO_DB

    db = args.db or str(DEMO_DB)
    selection = select_structures(open_engine(db), levels=levels, names=[args.name], split=args.split, subsets=[args.subset])
    if not len(selection):
        raise PykinmlError(f"no structure named {args.name!r} with labels at {', '.join(levels)} in the {args.subset} "
                           f"subset of split {args.split!r} of {db}")
    k = args.index % len(selection)
    atoms = selection.to_atoms(k)
    rows = selection.atoms_slice(k)
    reference = {level: (float(selection.energies[level][k]), selection.forces[level][rows]) for level in levels}
    where = f"{args.name}, structure {atoms.info['id']} of {db} ({args.subset} split, not seen in training)"
    return atoms, where, reference


def print_forces(atoms, forces: np.ndarray, reference: np.ndarray | None) -> None:
    header = f"  {'atom':>4} {'el':>2}  {'Fx':>9} {'Fy':>9} {'Fz':>9}"
    if reference is not None:
        header += f"   | reference {'Fx':>9} {'Fy':>9} {'Fz':>9}"
    print(header)
    for i, (symbol, f) in enumerate(zip(atoms.get_chemical_symbols(), forces)):
        line = f"  {i:>4} {symbol:>2}  {f[0]:9.4f} {f[1]:9.4f} {f[2]:9.4f}"
        if reference is not None:
            r = reference[i]
            line += f"   |           {r[0]:9.4f} {r[1]:9.4f} {r[2]:9.4f}"
        print(line)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    model_path = args.model
    if model_path is None:
        model_path = newest_run()
        if model_path is not None:
            print(f"no --model given: using the newest run in runs/, {model_path}")
        else:
            model_path = train_demo_model(args.epochs)

    from pykinml.calculator import PykinmlCalculator
    from pykinml.predict import load_model

    model = load_model(model_path, device=args.device, dtype="float64")
    print(f"model: {model.source} ({model.fidelity} fidelity; predicts {', '.join(model.names)}; "
          f"elements {' '.join(model.elements)})")
    atoms, where, reference = molecule_and_reference(args, model.levels)
    print(f"molecule: {atoms.get_chemical_formula()}, {len(atoms)} atoms: {where}\n")

    # 1. The Python API: a batch of frames in, energies (targets x frames) and forces (per frame) out.
    predictions = model.predict([atoms])
    if model.is_delta:
        # A delta model predicts E_high - E_low; the high level needs the low level's energy and forces.
        low, high = model.levels
        if low not in reference:
            print(f"{model.names[0]}: {predictions.energies[0, 0]:.6f} eV (a correction; add a {low} calculation "
                  f"to get {high}: see examples/train_delta.py)")
            print_forces(atoms, predictions.forces[0][0], None)
            return 0
        low_energy, low_forces = reference[low]
        print(f"{low} (stored label, the baseline): {low_energy:.6f} eV")
        predictions = model.with_baseline(predictions, np.array([low_energy]), [low_forces])
    for t, name in enumerate(predictions.names):
        energy, forces = float(predictions.energies[t, 0]), predictions.forces[0][t]
        print(f"{name} energy: {energy:.6f} eV")
        ref = reference.get(name)
        if ref is not None:
            error = energy - ref[0]
            force_rmse = float(np.sqrt(np.mean((forces - ref[1]) ** 2)))
            print(f"  reference {ref[0]:.6f} eV: error {error:+.4f} eV = {error / KCAL_MOL_EV:+.3f} kcal/mol; "
                  f"force RMSE {force_rmse:.4f} eV/Å = {force_rmse / KCAL_MOL_EV:.3f} kcal/mol/Å")
        print(f"{name} forces (eV/Å), max |F| {np.linalg.norm(forces, axis=1).max():.4f} eV/Å:")
        print_forces(atoms, forces, None if ref is None else ref[1])
        print()

    # 2. The ASE calculator: the same numbers through atoms.get_potential_energy() / get_forces().
    if not model.is_delta:
        atoms.calc = PykinmlCalculator(model)  # a path works too: PykinmlCalculator("runs/...")
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        same = abs(energy - float(predictions.energies[-1, 0])) + np.abs(forces - predictions.forces[0][-1]).max()
        print(f"ASE calculator ({model.names[-1]}): energy {energy:.6f} eV, max |F| "
              f"{np.linalg.norm(forces, axis=1).max():.4f} eV/Å (differs from predict() by {same:.1e})")
    return 0


if __name__ == "__main__":
    run_main(main)
