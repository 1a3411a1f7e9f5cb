"""Chained multi-fidelity training from Python: many cheap labels, few expensive ones.

``fidelity=multi`` trains one network per level, low → high; each higher network also sees the lower
network's atomic energy, so the expensive level is learned as a correction of the cheap one, and a
structure may lack the higher labels. That is the point of it: the high level is usually known for
a small part of the data only.

By default the script builds that situation from the demo database: a copy (next to the run
directory) in which every structure keeps its GFN1-xTB label (``gfn1``) but only ``--high-fraction``
(default 20 %) of the training structures keep their GFN2-xTB label (``gfn2``); validation and test
structures keep both, so the test errors are measured on every test structure. Each training
structure with a gfn2 label appears ``--high-level-repeats`` times per epoch (``data.high_level_repeats``).
``--high-fraction 1`` trains on the demo database as it is. About a minute on 2 CPU cores.

    python examples/train_multi_fid.py                           # demo, gfn2 on 20 % of the training set
    python examples/train_multi_fid.py --high-fraction 0.05 --high-level-repeats 10 --epochs 100
    python examples/train_multi_fid.py --db my.db --levels gfn2 dft --split seed0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from example_args import database_overrides, hydra_string, neurons_override, run_main, widths


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="a pykinml database (path or SQLAlchemy URL); default: the bundled demo database")
    parser.add_argument("--levels", nargs="+", metavar="LEVEL", help="levels low -> high (needed with --db; demo: gfn1 gfn2)")
    parser.add_argument("--split", default="default", help="the split stored in the database (default: default)")
    parser.add_argument("--high-fraction", type=float, default=0.2,
                        help="demo only: the fraction of training structures that keep their gfn2 label (default: 0.2)")
    parser.add_argument("--high-level-repeats", type=int, default=3,
                        help="times each training structure with the highest level appears per epoch (default: 3)")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs (default: 60)")
    parser.add_argument("--neurons", type=widths, help="hidden layer widths (default: the ani preset's 160,128,96)")
    parser.add_argument("--run-dir", help="where the run writes (default: runs/multi-<date>-<time>)")
    parser.add_argument("--seed", type=int, default=0, help="which training structures keep gfn2 (default: 0)")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    parser.add_argument("overrides", nargs="*", help="more pykinml-train overrides, e.g. optim.lr=5e-4")
    args = parser.parse_intermixed_args(argv)
    if args.db is not None and not args.levels:
        parser.error("--db needs --levels LOW ... HIGH")
    if not 0 < args.high_fraction <= 1:
        parser.error("--high-fraction must be in (0, 1]")
    return args


def scarce_demo_database(path: Path, fraction: float, seed: int) -> Path:
    """A copy of the demo database in which only ``fraction`` of the training structures keep their gfn2 label.

    With pykinml.db only: export the demo to extxyz, import every frame's gfn1 label and a subset's gfn2
    label (the same geometry imported twice is one structure that collects both), and store the demo's
    own train/val/test split.
    """
    import ase.io

    from pykinml.db import (
        ImportOptions,
        LevelKeys,
        assign_split,
        export_extxyz,
        import_file,
        open_engine,
        select_structures,
    )
    from pykinml.demo import DEMO_DB

    path.parent.mkdir(parents=True, exist_ok=True)
    demo = open_engine(DEMO_DB)
    everything, some = path.with_name(path.stem + "-gfn1.extxyz"), path.with_name(path.stem + "-gfn2.extxyz")
    export_extxyz(demo, str(everything))  # info["id"]: the structure's id in the demo database
    split = select_structures(demo, levels=["gfn1", "gfn2"], split="default", forces=False)
    subset = dict(zip(split.ids.tolist(), split.subsets.tolist()))  # 0 train, 1 val, 2 test
    train_ids = np.array([i for i, s in subset.items() if s == 0])
    keep = set(np.random.default_rng(seed).choice(train_ids, round(fraction * len(train_ids)), replace=False).tolist())
    keep |= {i for i, s in subset.items() if s != 0}
    frames = ase.io.read(everything, ":")
    ase.io.write(some, [atoms for atoms in frames if atoms.info["id"] in keep], format="extxyz")

    if path.exists():
        path.unlink()
    engine = open_engine(path, create=True)
    import_file(engine, str(everything), ImportOptions(levels=[LevelKeys.parse("gfn1")]))
    import_file(engine, str(some), ImportOptions(levels=[LevelKeys.parse("gfn2")]))
    # The demo's split, carried over by geometry (structure ids of the new database are its own).
    new = select_structures(engine, levels=["gfn1"], forces=False)
    demo_id = {split.positions[split.atoms_slice(k)].tobytes(): int(split.ids[k]) for k in range(len(split))}
    subsets: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for k in range(len(new)):
        code = subset[demo_id[new.positions[new.atoms_slice(k)].tobytes()]]
        subsets[("train", "val", "test")[code]].append(int(new.ids[k]))
    assign_split(engine, "default", subsets)
    high = select_structures(engine, levels=["gfn2"], split="default", subsets=["train"], forces=False)
    print(f"{path}: {len(new)} structures with gfn1; gfn2 on {len(high)} of {len(subsets['train'])} training "
          f"structures and on all {len(subsets['val'])} val and {len(subsets['test'])} test structures", flush=True)
    for file in (everything, some):
        file.unlink()
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from pykinml.config import compose_config
    from pykinml.train import quiet_lightning, train

    quiet_lightning()
    run_dir = Path(args.run_dir or f"runs/multi-{time.strftime('%Y%m%d-%H%M%S')}")
    overrides = ["fidelity=multi", f"trainer.max_epochs={args.epochs}", f"trainer.progress_bar={str(args.progress).lower()}",
                 f"data.high_level_repeats={args.high_level_repeats}", f"data.split={hydra_string(args.split)}",
                 f"run_dir={hydra_string(run_dir)}"]
    if args.db is not None:
        overrides += database_overrides(args.db, args.levels)
    elif args.high_fraction < 1:
        db = scarce_demo_database(run_dir.with_name(run_dir.name + "-data.db"), args.high_fraction, args.seed)
        overrides += [f"data.db={hydra_string(db)}"]
    overrides += neurons_override(args.neurons)
    config = compose_config(overrides + list(args.overrides))
    levels = list(config.data.levels)
    print(f"training a chained multi-fidelity model on {' -> '.join(levels)} from {config.data.db} ({args.epochs} epochs)",
          flush=True)
    start = time.perf_counter()
    result = train(config)  # prints the validation and test errors of every level
    print(f"\ntrained in {time.perf_counter() - start:.0f} s; test errors of the best checkpoint, per level:")
    test = result.metrics.get("test", {})
    for level in levels:
        if f"{level}/energy_rmse_kcal_mol" in test:
            line = f"  {level}: energy RMSE {test[f'{level}/energy_rmse_kcal_mol']:.3f} kcal/mol"
            if f"{level}/force_rmse_kcal_mol_a" in test:
                line += f", force RMSE {test[f'{level}/force_rmse_kcal_mol_a']:.3f} kcal/mol/Å " \
                        f"({test[f'{level}/force_rmse_ev_a']:.4f} eV/Å)"
            print(line)
    print(f"best checkpoint: {result.best_checkpoint}  (examples/run_model.py --model {result.run_dir} "
          f"predicts every level)")
    return 0


if __name__ == "__main__":
    run_main(main)
