"""Train a single-fidelity potential (energies and forces at one level of theory) from Python.

This is the same code path as ``pykinml-train``: ``compose_config`` builds the run configuration from
``group=option`` / ``key=value`` overrides and ``train`` precomputes the AEV cache, trains with PyTorch
Lightning and evaluates the best checkpoint. By default it trains on the GFN2-xTB labels (``gfn2``) of the
demo database that ships with pykinml (600 distorted CH4, H2O, NH3, C2H4, CH3OH and ethanol geometries)
for 100 epochs: about a minute on 2 CPU cores.

    python examples/train_single_fid.py                       # demo database, 100 epochs
    python examples/train_single_fid.py --epochs 5 --neurons 32,16 --run-dir runs/quick
    python examples/train_single_fid.py --db my.db --level wb97x --split seed0 data.batch_size=64

Anything after the options is passed on as a ``pykinml-train`` override (``optim.lr=5e-4``,
``model=small``, ``trainer=gpu``, ...). The run directory holds ``checkpoints/best.ckpt``, which
``examples/run_model.py --model RUN_DIR`` uses to predict energies and forces.
"""

from __future__ import annotations

import argparse
import time

from example_args import hydra_string, neurons_override, run_main, widths


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="a pykinml database (path or SQLAlchemy URL); default: the bundled demo database")
    parser.add_argument("--level", help="the level of theory to train on (needed with --db; demo: gfn2)")
    parser.add_argument("--split", default="default", help="the split stored in the database (default: default)")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (default: 100)")
    parser.add_argument("--model", choices=("ani", "small"), default="ani",
                        help="network preset: ani (160-128-96 CELU, default) or small (48-24-12 Gaussian)")
    parser.add_argument("--neurons", type=widths, help="hidden layer widths, e.g. 32,16 (default: the ani preset's 160,128,96)")
    parser.add_argument("--energy-only", action="store_true", help="train on energies only (no forces)")
    parser.add_argument("--run-dir", help="where the run writes (default: runs/single-<date>-<time>)")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    parser.add_argument("overrides", nargs="*", help="more pykinml-train overrides, e.g. optim.lr=5e-4")
    args = parser.parse_intermixed_args(argv)
    if args.db is not None and not args.level:
        parser.error("--db needs --level LEVEL (the level of theory to train on)")
    return args


def overrides(args: argparse.Namespace) -> list[str]:
    """The pykinml-train overrides this script's options stand for."""
    result = ["fidelity=single", f"model={args.model}", f"trainer.max_epochs={args.epochs}",
              f"trainer.progress_bar={str(args.progress).lower()}"]
    if args.db is not None:
        result += ["data=database", f"data.db={hydra_string(args.db)}", f"data.levels=[{hydra_string(args.level)}]"]
    result.append(f"data.split={hydra_string(args.split)}")
    result += neurons_override(args.neurons)
    if args.energy_only:
        result.append("model.forces=false")
    if args.run_dir:
        result.append(f"run_dir={hydra_string(args.run_dir)}")
    return result + list(args.overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from pykinml.config import compose_config
    from pykinml.train import quiet_lightning, train

    quiet_lightning()  # after the import: Lightning sets up its loggers when imported

    config = compose_config(overrides(args))
    level = config.data.levels[0]
    print(f"training a single-fidelity potential on {level} from {config.data.db} "
          f"({args.epochs} epochs, hidden layers {list(config.model.neurons)}, "
          f"{'energies' if not config.model.forces else 'energies and forces'})", flush=True)
    start = time.perf_counter()
    result = train(config)  # prints the validation and test errors of the best checkpoint
    test = result.metrics.get("test", {})
    print(f"\ntrained in {time.perf_counter() - start:.0f} s; the best checkpoint on the test split:")
    if test:
        print(f"  energy RMSE {test[f'{level}/energy_rmse_kcal_mol']:.3f} kcal/mol "
              f"({test[f'{level}/energy_rmse_ev']:.4f} eV, {test[f'{level}/energy_rmse_mev_atom']:.2f} meV/atom)")
        if f"{level}/force_rmse_ev_a" in test:
            print(f"  force RMSE  {test[f'{level}/force_rmse_kcal_mol_a']:.3f} kcal/mol/Å "
                  f"({test[f'{level}/force_rmse_ev_a']:.4f} eV/Å)")
    print(f"best checkpoint: {result.best_checkpoint}")
    print(f"next: python examples/run_model.py --model {result.run_dir}")
    return 0


if __name__ == "__main__":
    run_main(main)
