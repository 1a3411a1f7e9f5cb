"""Delta learning from Python: learn E_high − E_low, then predict the high level from a low-level calculation.

A delta model (``fidelity=delta``) is trained on the difference between two levels of theory on the
structures that carry both; at use, the high level is the low-level result plus the model's
correction. On the demo database the levels are GFN1-xTB (``gfn1``, low) and GFN2-xTB (``gfn2``, high).

After training, the script treats the test split as "new" structures: it reads them and their gfn1
labels (standing in for the low-level calculation you would run) with ``pykinml.db``, predicts gfn2
energies and forces with ``Model.with_baseline``, and compares them with the stored gfn2 labels (and
the gfn1 forces with the gfn2 ones, the error without the model). When ``tblite`` is installed (``pip install tblite``; it made the
demo labels) it also shows the calculator form: ``PykinmlCalculator(run, baseline=TBLite("GFN1-xTB"))``
runs a real GFN1-xTB calculation and adds the learned correction. About 45 s on 2 CPU cores.

    python examples/train_delta.py                         # demo database, 100 epochs
    python examples/train_delta.py --db my.db --levels gfn2 dft --split seed0 --epochs 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from example_args import database_overrides, hydra_string, neurons_override, run_main, widths

from pykinml.units import KCAL_MOL_EV


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="a pykinml database (path or SQLAlchemy URL); default: the bundled demo database")
    parser.add_argument("--levels", nargs=2, metavar=("LOW", "HIGH"), help="the two levels (needed with --db; demo: gfn1 gfn2)")
    parser.add_argument("--split", default="default", help="the split stored in the database (default: default)")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (default: 100)")
    parser.add_argument("--neurons", type=widths, help="hidden layer widths (default: the ani preset's 160,128,96)")
    parser.add_argument("--run-dir", help="where the run writes (default: runs/delta-<date>-<time>)")
    parser.add_argument("--no-tblite", action="store_true", help="skip the calculator form even when tblite is installed")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    parser.add_argument("overrides", nargs="*", help="more pykinml-train overrides, e.g. optim.lr=5e-4")
    args = parser.parse_intermixed_args(argv)
    if args.db is not None and not args.levels:
        parser.error("--db needs --levels LOW HIGH")
    return args


def rmse(errors: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(errors))))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from pykinml.config import compose_config
    from pykinml.db import open_engine, select_structures
    from pykinml.predict import load_model
    from pykinml.train import quiet_lightning, train

    quiet_lightning()

    # 1. Train the correction: the same as `pykinml-train fidelity=delta ...`.
    overrides = ["fidelity=delta", f"trainer.max_epochs={args.epochs}", f"trainer.progress_bar={str(args.progress).lower()}",
                 f"data.split={hydra_string(args.split)}"]
    overrides += database_overrides(args.db, args.levels)
    overrides += neurons_override(args.neurons)
    if args.run_dir:
        overrides.append(f"run_dir={hydra_string(args.run_dir)}")
    config = compose_config(overrides + list(args.overrides))
    low, high = config.data.levels
    print(f"training a delta model {high} - {low} on {config.data.db} ({args.epochs} epochs)", flush=True)
    start = time.perf_counter()
    result = train(config)
    print(f"trained in {time.perf_counter() - start:.0f} s\n")

    # 2. "New" structures: the test split, never seen in training, with their low-level labels.
    selection = select_structures(open_engine(config.data.db), levels=[low, high], names=config.data.names,
                                  split=config.data.split, subsets=["test"])
    frames = [selection.to_atoms(k) for k in range(len(selection))]
    rows = [selection.atoms_slice(k) for k in range(len(selection))]
    low_energies, low_forces = selection.energies[low], [selection.forces[low][r] for r in rows]

    # 3. High level = low-level calculation + learned correction.
    model = load_model(result.run_dir)  # its best checkpoint, float64 on the CPU
    predicted = model.with_baseline(model.predict(frames), low_energies, low_forces)
    energy_error = predicted.energies[0] - selection.energies[high]
    force_error = np.concatenate([predicted.forces[k][0] - selection.forces[high][r] for k, r in enumerate(rows)])
    # For comparison: the low level's own forces (its absolute energies sit on another zero, per element).
    plain_force_error = np.concatenate([selection.forces[low][r] - selection.forces[high][r] for r in rows])
    print(f"{high} of {len(selection)} test structures predicted as {low} label + delta model, against their {high} labels:")
    print(f"  {low} + delta: energy RMSE {rmse(energy_error) / KCAL_MOL_EV:.3f} kcal/mol, "
          f"MAE {np.abs(energy_error).mean() / KCAL_MOL_EV:.3f} kcal/mol; "
          f"force RMSE {rmse(force_error):.4f} eV/Å ({rmse(force_error) / KCAL_MOL_EV:.3f} kcal/mol/Å)")
    print(f"  {low} forces alone: force RMSE {rmse(plain_force_error):.4f} eV/Å "
          f"({rmse(plain_force_error) / KCAL_MOL_EV:.3f} kcal/mol/Å)")
    k = 0
    print(f"  e.g. {selection.names[k]} (structure {selection.ids[k]}): {low} {low_energies[k]:.6f} eV + delta "
          f"{predicted.energies[0, k] - low_energies[k]:+.6f} eV = {predicted.energies[0, k]:.6f} eV; "
          f"{high} label {selection.energies[high][k]:.6f} eV")

    # 4. The calculator form: an ASE calculator for the low level as the baseline, when one is at hand.
    if args.no_tblite or (low, high) != ("gfn1", "gfn2"):
        return 0
    try:
        from tblite.ase import TBLite
    except ImportError:
        print("\n(pip install tblite to see the calculator form with a real GFN1-xTB baseline)")
        return 0
    from pykinml.calculator import PykinmlCalculator

    atoms = frames[k].copy()
    atoms.calc = PykinmlCalculator(result.run_dir, baseline=TBLite(method="GFN1-xTB", verbosity=0))
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    print(f"\nASE calculator, GFN1-xTB (tblite) + delta model, same structure: energy {energy:.6f} eV "
          f"(error vs {high} label {(energy - selection.energies[high][k]) / KCAL_MOL_EV:+.3f} kcal/mol), "
          f"force RMSE vs label {rmse(forces - selection.forces[high][rows[k]]):.4f} eV/Å")
    return 0


if __name__ == "__main__":
    run_main(main)
