"""Pick up a trained model again: continue its run exactly, then fine-tune it from energies to forces.

1. **Continue a run** (``ckpt_path=<run>/checkpoints/last.ckpt``): the same run goes on for more epochs
   from the state saved in ``last.ckpt`` (weights, optimizer moments, learning-rate schedule, epoch
   counter and batch order), as an uninterrupted run would from there. The run's own ``config.yaml``
   is the configuration, so nothing about the model has to be repeated.
2. **Fine-tune** (``init_from=<run>/checkpoints/best.ckpt`` and ``model.forces=true``): a new run starts
   from the trained network weights and self atomic energies with a fresh optimizer, here to turn an
   energy-only model into an energy + force model.

Then ``pykinml.predict.load_model`` loads each model and evaluates it on the test split, forces
included: an energy-only model predicts forces too (−dE/dx), just poorly.

Without ``--run`` it first trains an energy-only model on the demo database itself. The defaults
(40 + 20 energy-only epochs, 40 fine-tuning epochs) take about a minute and a half on 2 CPU cores.

    python examples/load_model.py                                 # demo: train, continue, fine-tune
    python examples/load_model.py --run runs/single-20250101-120000 --more-epochs 50 --finetune-epochs 100
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from example_args import hydra_string, run_main, widths

from pykinml.errors import PykinmlError
from pykinml.units import KCAL_MOL_EV


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="an existing run directory to continue and fine-tune (default: train one on the demo)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of the energy-only model trained without --run (default: 40)")
    parser.add_argument("--more-epochs", type=int, default=20, help="epochs to add when continuing the run (default: 20)")
    parser.add_argument("--finetune-epochs", type=int, default=40, help="epochs of the force fine-tuning run (default: 40)")
    parser.add_argument("--neurons", type=widths, default=[64, 32],
                        help="hidden layers of the model trained without --run (default: 64,32)")
    parser.add_argument("--workdir", help="where new runs go (default: runs/load_model-<date>-<time>)")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    return parser.parse_args(argv)


def run_config(run_dir: Path, progress: bool):
    """A run's own resolved configuration (config.yaml), checked again against the schema."""
    from omegaconf import OmegaConf

    from pykinml.config import validate

    if not (run_dir / "config.yaml").is_file():
        raise PykinmlError(f"--run {run_dir}: not a pykinml run directory (no config.yaml)")
    config = validate(OmegaConf.load(run_dir / "config.yaml"))
    config.trainer.progress_bar = progress
    return config


def epochs_done(checkpoint: Path) -> int:
    import torch

    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]) + 1  # saved at an epoch's end


def test_errors(run_dir: Path, config) -> dict[str, tuple[float, float]]:
    """(energy RMSE kcal/mol, force RMSE kcal/mol/Å) per target on the run's test split, from load_model."""
    from pykinml.db import open_engine, select_structures
    from pykinml.predict import load_model

    model = load_model(run_dir)  # its best checkpoint, in float64
    data = config.data
    selection = select_structures(open_engine(data.db), levels=list(data.levels), names=data.names,
                                  split=data.split, subsets=["test"])
    frames = [selection.to_atoms(k) for k in range(len(selection))]
    predictions = model.predict(frames)
    errors = {}
    for t, name in enumerate(model.names):
        # a delta model's target is "high-low": its reference is the difference of the two levels' labels
        high, low = (model.levels[-1], model.levels[0]) if model.is_delta else (name, None)
        energy = selection.energies[high] - (selection.energies[low] if low else 0)
        energy_error = predictions.energies[t] - energy
        force_errors = []
        for k in range(len(selection)):
            rows = selection.atoms_slice(k)
            reference = selection.forces[high][rows] - (selection.forces[low][rows] if low else 0)
            force_errors.append(predictions.forces[k][t] - reference)
        force_rmse = np.sqrt(np.mean(np.concatenate(force_errors) ** 2))
        errors[name] = (float(np.sqrt(np.mean(energy_error**2))) / KCAL_MOL_EV, float(force_rmse) / KCAL_MOL_EV)
    return errors


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from pykinml.config import compose_config
    from pykinml.train import quiet_lightning, train

    quiet_lightning()
    workdir = Path(args.workdir or f"runs/load_model-{time.strftime('%Y%m%d-%H%M%S')}")
    summary: list[tuple[str, Path, int]] = []

    if args.run:
        run = Path(args.run)
    else:
        run = workdir / "energy-only"
        print(f"== 0. an energy-only gfn2 model on the demo database ({args.epochs} epochs) -> {run}", flush=True)
        train(compose_config([
            "model.forces=false", f"model.neurons=[{','.join(map(str, args.neurons))}]",
            f"trainer.max_epochs={args.epochs}", f"trainer.progress_bar={str(args.progress).lower()}", f"run_dir={hydra_string(run)}",
        ]))
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise PykinmlError(f"--run {run}: no checkpoints/last.ckpt to continue from")
    before = epochs_done(last)  # where last.ckpt was saved: resuming starts there
    trained = run / "metrics.json"
    trained = json.loads(trained.read_text())["epochs"] if trained.is_file() else before
    # Keep the run's best checkpoint as it is now for the comparison at the end (continuing replaces it).
    workdir.mkdir(parents=True, exist_ok=True)
    as_it_was = workdir / f"{run.name}-before-continuing.ckpt"
    best = run / "checkpoints" / "best.ckpt"
    shutil.copy(best if best.is_file() else last, as_it_was)
    summary.append((f"{run.name} (as it was)", as_it_was, trained))

    # 1. Continue exactly where the run stopped: same config, ckpt_path=last.ckpt, a larger max_epochs.
    config = run_config(run, args.progress)
    config.trainer.max_epochs = before + args.more_epochs
    config.ckpt_path, config.run_dir, config.init_from = str(last), str(run), None
    print(f"\n== 1. continue {run} from its last.ckpt (after epoch {before}) to epoch {before + args.more_epochs} "
          f"(ckpt_path={last})", flush=True)
    continued = train(config)
    summary.append((f"{run.name} (continued)", continued.best_checkpoint, continued.metrics["epochs"]))

    # 2. Fine-tune: a new run from the best weights, now training on forces too.
    tuned_dir = workdir / f"{run.name}-forces"
    config = run_config(run, args.progress)
    config.model.forces = True
    config.trainer.max_epochs = args.finetune_epochs
    config.init_from, config.ckpt_path, config.run_dir = str(continued.best_checkpoint), None, str(tuned_dir)
    print(f"\n== 2. fine-tune with forces for {args.finetune_epochs} epochs (init_from={continued.best_checkpoint}) "
          f"-> {tuned_dir}", flush=True)
    tuned = train(config)
    summary.append((f"{tuned_dir.name} (fine-tuned)", tuned.best_checkpoint, args.finetune_epochs))

    # Load every model again and evaluate it on the test split (forces by autograd, even for energy-only models).
    print("\ntest split, each model loaded with pykinml.predict.load_model:")
    print(f"  {'model (its best checkpoint)':<36} {'epochs':>6}  {'target':<10} {'energy RMSE':>18} {'force RMSE':>20}")
    for label, checkpoint, epochs in summary:
        for name, (energy, force) in test_errors(checkpoint, config).items():
            print(f"  {label:<36} {epochs:>6}  {name:<10} {energy:>9.3f} kcal/mol {force:>9.3f} kcal/mol/Å")
    print(f"\nruns: {run} (continued in place), {tuned_dir}")
    return 0


if __name__ == "__main__":
    run_main(main)
