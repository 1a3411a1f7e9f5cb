"""``pykinml-predict``: energies and forces of every frame of xyz / extxyz / ASE-db files from a trained model.

    pykinml-predict runs/single-…/ frames.xyz -o predicted.extxyz
    pykinml-predict model.pt 'md/*.xyz' -o energies.csv --reference-key energy
    pykinml-predict runs/delta-…/ low.extxyz -o high.extxyz --baseline-key gfn1_energy

Frames are streamed batch by batch (a file of millions of frames never has to fit in memory) and the
output is written to a temporary name and renamed at the end, so a bad frame leaves no partial file.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from collections.abc import Iterator

from pykinml.allocator import keep_freed_memory
from pykinml.cli.errors import report_errors
from pykinml.errors import PykinmlError


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pykinml-predict",
        description="Predict energies and forces (stress for periodic cells) of structure files with a pykinml model.",
    )
    parser.add_argument("model", help="a checkpoint (.ckpt), a run directory or a model written by pykinml-export")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files ase.io reads (xyz, extxyz, ASE db, ...) or glob patterns")
    parser.add_argument("-o", "--output", required=True, help="output file: extxyz (default), .csv or .json (energies only)")
    parser.add_argument("--format", choices=("extxyz", "csv", "json"), help="output format (default: from the suffix)")
    parser.add_argument("--batch-size", type=int, default=256, help="frames per batch (default 256)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="precision (default float32)")
    parser.add_argument("--level", help="multi-fidelity models: the level written as the frame's energy (default: highest)")
    parser.add_argument("--reference-key", help="labels in the inputs to compare with: prints energy and force MAE/RMSE")
    parser.add_argument("--reference-forces-key", help="forces of the reference (default: the energy key with energy → forces)")
    parser.add_argument("--baseline-key", help="delta models: the low-level energy in the inputs that the model corrects")
    parser.add_argument("--baseline-forces-key", help="delta models: the low-level forces (default: energy → forces in the key)")
    parser.add_argument("--units", default="eV", help="energy unit of reference and baseline labels: eV (default), hartree, kcal/mol, kJ/mol")
    parser.add_argument("--no-forces", action="store_true", help="energies only (faster)")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser.parse_args(argv)


def expand_inputs(patterns: list[str]) -> list[str]:
    """Input files in order: existing paths as given, other arguments as glob patterns (sorted matches)."""
    files: list[str] = []
    for pattern in patterns:
        if os.path.exists(pattern):
            files.append(pattern)
            continue
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise PykinmlError(f"INPUT {pattern}: no such file, and no file matches it as a pattern")
        files.extend(matches)
    for path in files:
        if os.path.isdir(path):
            raise PykinmlError(f"INPUT {path}: is a directory, not a structure file")
    return files


def forces_key(energy_key: str, given: str | None) -> str:
    """The forces key that goes with an energy key: ``energy`` → ``forces``, ``dft_energy`` → ``dft_forces``."""
    if given:
        return given
    if energy_key.endswith("energy"):
        return energy_key[: -len("energy")] + "forces"
    return f"{energy_key}_forces"


def _labels(args: argparse.Namespace):
    """Label readers for the reference and the baseline, built on the importer's label extractor."""
    from pykinml.db.readers.labels import LabelExtractor, LevelKeys, Units
    from pykinml.units import DEFAULT_FORCE_UNIT, energy_factor, force_factor

    factor = energy_factor(args.units)
    units = Units(factor, force_factor(DEFAULT_FORCE_UNIT[args.units.strip().lower()]))
    readers = {}
    for role, key, given in (("reference", args.reference_key, args.reference_forces_key),
                             ("baseline", args.baseline_key, args.baseline_forces_key)):
        if key:
            keys = LevelKeys(role, key, forces_key(key, given), None, bare=not given)
            readers[role] = LabelExtractor([keys], "", units)
    return readers


def _frames(files: list[str], model, readers: dict) -> Iterator[tuple]:
    """(atoms, file, frame index, labels by role) for every frame of every file, checked as it is read."""
    from pykinml.db.readers.ase_files import iread_atoms

    for path in files:
        for index, (atoms, where) in enumerate(iread_atoms(path)):
            model.check_elements(atoms, where)
            results = dict(atoms.calc.results) if atoms.calc is not None else {}
            labels = {}
            for role, reader in readers.items():
                labels[role] = next(iter(reader(atoms.info, atoms.arrays, results, where).values()))
            yield atoms, path, index, labels, where


def _batches(frames: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    batch = []
    for item in frames:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _predictions(model, batch: list[tuple], main: int, forces: bool):
    """FramePredictions of one batch: the main target, per-level extras and the reference labels."""
    import numpy as np

    from pykinml.prediction_files import FramePrediction

    raw = model.predict([item[0] for item in batch], forces=forces)
    out = []
    for k, (atoms, path, index, labels, where) in enumerate(batch):
        level_forces = raw.forces[k] if forces else None
        energy = float(raw.energies[main, k])
        frame_forces = None if level_forces is None else level_forces[main]
        extra_energies, extra_forces = {}, {}
        if model.is_delta:
            baseline = labels["baseline"]
            extra_energies["delta"], energy = energy, energy + baseline.energy
            if forces:
                if baseline.forces is None:
                    raise PykinmlError(f"{where}: no baseline forces in this frame; give --baseline-forces-key or --no-forces")
                extra_forces["delta"] = frame_forces
                frame_forces = frame_forces + np.asarray(baseline.forces).reshape(-1, 3)
        elif len(model.names) > 1:
            for t, name in enumerate(model.names):
                extra_energies[name] = float(raw.energies[t, k])
                if forces:
                    extra_forces[name] = level_forces[t]
        stress = None
        if raw.stress is not None and not np.isnan(raw.stress[main, k]).any():
            stress = raw.stress[main, k]
        reference = labels.get("reference")
        out.append(FramePrediction(
            atoms, path, index, energy, frame_forces, stress, extra_energies, extra_forces,
            None if reference is None else reference.energy,
            None if reference is None or reference.forces is None else np.asarray(reference.forces).reshape(-1, 3),
        ))
    return out


def predict_files(args: argparse.Namespace) -> int:
    """The whole command: check every input, stream predictions into the output, print the errors."""
    from tqdm import tqdm

    from pykinml.files import write_with
    from pykinml.predict import load_model
    from pykinml.prediction_files import ErrorSums, PredictionWriter, output_format

    if args.batch_size < 1:
        raise PykinmlError(f"--batch-size {args.batch_size}: must be at least 1")
    files = expand_inputs(args.inputs)
    fmt = output_format(args.output, args.format)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    if model.is_delta and not args.baseline_key:
        raise PykinmlError(
            f"{args.model} is a delta model ({model.names[0]}): give --baseline-key, the {model.levels[0]} energy "
            "in the inputs that it corrects"
        )
    if args.baseline_key and not model.is_delta:
        raise PykinmlError(f"--baseline-key is only for delta models; {args.model} is {model.fidelity} fidelity")
    if args.level is not None and args.level not in model.names:
        raise PykinmlError(f"--level {args.level}: this model predicts {', '.join(model.names)}")
    main = model.names.index(args.level) if args.level else len(model.names) - 1
    readers = _labels(args)
    errors = ErrorSums()
    count = 0
    start = time.perf_counter()
    progress = sys.stderr.isatty() if args.progress is None else args.progress

    def write(handle) -> None:
        nonlocal count
        writer = PredictionWriter(handle, fmt)
        with tqdm(unit=" frames", disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
            for batch in _batches(_frames(files, model, readers), args.batch_size):
                for prediction in _predictions(model, batch, main, not args.no_forces):
                    writer.write(prediction)
                    errors.add(prediction)
                count += len(batch)
                bar.update(len(batch))
        writer.close()

    write_with(args.output, write)
    seconds = time.perf_counter() - start
    target = model.levels[-1] if model.is_delta else model.names[main]
    print(f"{count} frames from {len(files)} file(s) -> {args.output} ({fmt}, {target}; {count / max(seconds, 1e-9):.0f} frames/s)")
    for line in errors.summary(args.reference_key or ""):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    keep_freed_memory()
    return report_errors("pykinml-predict", lambda: predict_files(args))


if __name__ == "__main__":
    sys.exit(main())
