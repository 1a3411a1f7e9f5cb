"""Periodic-solid benchmark (not a test): the mlearn Mo cells (../shared/data/mlearn_mo), TensorAlloy's test.

    python bench/mo.py train [--minutes 30] [--threads 2]   # import, split, train experiment=mlearn_mo, test MAE
    python bench/mo.py predict [--model RUN_OR_CKPT]        # bcc Mo supercells, 2,000 -> 16,000 atoms

train: imports training.json (194 cells) and test.json (23 cells) into a fresh SQLite database, splits the
training cells 90/10 into train/val with the 23 test cells as the test set, runs `pykinml-train
experiment=mlearn_mo` for --minutes, and prints the test MAE of energy (meV/atom), forces (eV/Å) and stress
(GPa) against TensorAlloy's Mo numbers (4.9 meV/atom, 0.19 eV/Å, 0.24 GPa; SNAP: 13.2, 0.25, 0.87).

predict: energy + forces + stress of bcc Mo supercells (a = 3.16 Å, thermal rattle 0.05 Å) of 2,000 to
16,000 atoms with `load_model(...).predict` (float32), time per evaluation and per atom; linear scaling
means a flat time per atom. The model is the train step's (or --model).

Numbers go to bench/results/mo.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train import save as save_section  # noqa: E402  (bench/train.py)

DATA = HERE.parent.parent / "shared" / "data" / "mlearn_mo"
RESULTS = HERE / "results" / "mo.json"
TARGETS = {"energy_mae_mev_atom": 4.9, "force_mae_ev_a": 0.19, "stress_mae_gpa": 0.24}
SNAP = {"energy_mae_mev_atom": 13.2, "force_mae_ev_a": 0.25, "stress_mae_gpa": 0.87}


def save(section: str, values: dict) -> None:
    save_section(section, values, RESULTS)


def tool(name: str, *args: str, cwd: Path) -> None:
    subprocess.run([str(Path(sys.executable).with_name(name)), *args], check=True, cwd=cwd)


def prepare(work: Path) -> Path:
    """The mlearn Mo database with split 'mlearn' (train/val from training.json, test = test.json)."""
    if not DATA.is_dir():
        sys.exit(f"bench/mo.py needs {DATA} (../shared/data)")
    db = work / "mo.db"
    tool("pykinml-db", "import", str(DATA / "training.json"), "--db", str(db), "--level", "pbe", "--name", "mo-train", cwd=work)
    tool("pykinml-db", "import", str(DATA / "test.json"), "--db", str(db), "--level", "pbe", "--name", "mo-test", cwd=work)
    tool("pykinml-db", "split", "--db", str(db), "--name", "mlearn", "--fractions", "0.9", "0.1", "0",
         "--names", "mo-train", "--test-names", "mo-test", cwd=work)
    return db


def train(args) -> None:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pykinml-mo-"))
    work.mkdir(parents=True, exist_ok=True)
    db = prepare(work) if not (work / "mo.db").is_file() else work / "mo.db"
    overrides = ["experiment=mlearn_mo", f"data.db={db}", "run_dir=run", f"cache_dir={work / 'cache'}",
                 f"trainer.max_time=00:00:{args.minutes:02d}:00", f"trainer.threads={args.threads}",
                 "trainer.progress_bar=false", *args.overrides]
    start = time.perf_counter()
    with open(work / "train.log", "w") as log:
        subprocess.run([str(Path(sys.executable).with_name("pykinml-train")), *overrides], check=True, cwd=work,
                       stdout=log, stderr=subprocess.STDOUT)
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    test = {key: metrics["test"][f"pbe/{key}"] for key in TARGETS}
    print(f"mlearn Mo, {args.minutes} min on {args.threads} thread(s), {metrics['epochs']} epochs; test MAE (23 cells):")
    for key, value in test.items():
        verdict = "met" if value <= TARGETS[key] else "NOT met"
        print(f"  {key:>20}: {value:8.3f}   TensorAlloy {TARGETS[key]}, SNAP {SNAP[key]}  -> target {verdict}")
    save("train", {"minutes": args.minutes, "threads": args.threads, "epochs": metrics["epochs"], "test_mae": test,
                   "targets": TARGETS, "snap": SNAP, "val": metrics["val"], "test": metrics["test"],
                   "wall_seconds": time.perf_counter() - start, "run": str(work / "run"), "overrides": overrides})


def predict(args) -> None:
    import numpy as np
    import torch
    from ase.build import bulk

    from pykinml.predict import load_model

    torch.set_num_threads(args.threads)
    model_path = args.model or json.loads(RESULTS.read_text())["train"]["run"]
    model = load_model(model_path, dtype="float32")
    rows = []
    for n in args.repeats:
        atoms = bulk("Mo", "bcc", a=3.16, cubic=True).repeat((n, n, n))
        atoms.rattle(0.05, seed=n)
        model.predict([atoms], stress=True)  # warm-up (allocator, first-call overheads)
        times = []
        for _ in range(args.calls):
            start = time.perf_counter()
            out = model.predict([atoms], stress=True)
            times.append(time.perf_counter() - start)
        assert np.isfinite(out.stress).all() and np.isfinite(out.forces[0]).all()
        seconds = float(np.median(times))
        rows.append({"atoms": len(atoms), "seconds": seconds, "us_per_atom": 1e6 * seconds / len(atoms)})
        print(f"{len(atoms):>6} atoms: {seconds:7.3f} s per energy+forces+stress, {rows[-1]['us_per_atom']:6.1f} µs/atom")
    ratio = rows[-1]["us_per_atom"] / rows[0]["us_per_atom"]
    print(f"time per atom, {rows[-1]['atoms']} vs {rows[0]['atoms']} atoms: {ratio:.2f}x (1.0 = linear scaling)")
    save("predict", {"model": str(model_path), "threads": args.threads, "rows": rows, "per_atom_ratio": ratio})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("train")
    p.add_argument("--minutes", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", help="keep the database, cache and run here (default: a new temporary directory)")
    p.add_argument("overrides", nargs="*", help="more pykinml-train overrides")
    p.set_defaults(run=train)
    p = sub.add_parser("predict")
    p.add_argument("--model", help="a run directory, checkpoint or exported model (default: the train step's run)")
    p.add_argument("--repeats", type=int, nargs="+", default=[10, 13, 16, 20],
                   help="n for n x n x n conventional bcc cells (2 n^3 atoms; default 2,000 ... 16,000)")
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(run=predict)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
