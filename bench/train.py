"""Training benchmarks (not tests): force-training throughput against the original PyKinML, accuracy on
PyKinML's C5H5 set within a time budget, and the multi-fidelity benefit on ethanol.

    python bench/train.py throughput [--epochs 4] [--processes 1 2] [--original-epochs 2]
    python bench/train.py accuracy [--minutes 12]
    python bench/train.py multifidelity [--minutes 6] [--high 50] [--low 950]

Numbers go to bench/results/train.json (each mode updates its own section).

throughput: C5H5 (10 atoms, AEV length 224, networks 224-48-24-12-1 per element, batch 50, energies and
forces, float32) with PyKinML's own mask; structures per second over training batches only (validation and
start-up excluded, first epoch dropped), with 1 process and with 2 DDP processes on CPU (one torch thread
each). The original PyKinML 1.1.2 runs the same data in its own virtualenv (bench/pykinml_original_env.py)
in the same invocation; the ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
C5H5_DB = SHARED / "pykinml" / "C5H5.db"
C5H5_MASK = SHARED / "pykinml" / "sample_tvt.txt"
RESULTS = HERE / "results" / "train.json"


def save(section: str, values: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[section] = values
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS} [{section}]")


def pykinml_db(*args: str) -> None:
    exe = Path(sys.executable).with_name("pykinml-db")
    subprocess.run([str(exe), *args], check=True, stdout=subprocess.DEVNULL)


def c5h5_database(workdir: Path) -> Path:
    """PyKinML's C5H5 set imported into a pykinml database, with its train/val/test mask as split 'pykinml-mask'."""
    if not C5H5_DB.is_file():
        sys.exit(f"bench/train.py needs {C5H5_DB} (../shared/data)")
    db = workdir / "c5h5.db"
    if not db.is_file():
        pykinml_db("import", str(C5H5_DB), "--db", str(db))
        pykinml_db("split", "--db", str(db), "--name", "pykinml-mask", "--mask", str(C5H5_MASK))
    return db


class EpochTimer:
    """Seconds from each epoch's first training batch to its last (validation excluded)."""

    def __new__(cls):
        import lightning as L

        class _Timer(L.Callback):
            def __init__(self):
                self.seconds: list[float] = []
                self.batches: list[int] = []

            def on_train_epoch_start(self, trainer, module):
                self._start, self._count = time.perf_counter(), 0

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                self._end, self._count = time.perf_counter(), self._count + 1

            def on_train_epoch_end(self, trainer, module):
                self.seconds.append(self._end - self._start)
                self.batches.append(self._count)

        return _Timer()


def worker(args) -> None:
    """One training run (re-executed per rank by Lightning's DDP launcher); rank 0 writes the timings."""
    import torch  # noqa: F401

    from pykinml.config import compose_config
    from pykinml.train import train

    timer = EpochTimer()
    overrides = [
        "experiment=c5h5", f"data.db={args.db}", f"run_dir={args.run_dir}", f"cache_dir={args.cache}",
        f"trainer.max_epochs={args.epochs}", "trainer.max_time=null", "trainer.progress_bar=false",
        "scheduler=none", "trainer.accelerator=cpu",
    ]
    if args.devices > 1:
        overrides += ["trainer=ddp", f"trainer.devices={args.devices}", "trainer.accelerator=cpu"]
    result = train(compose_config(overrides), callbacks=[timer])
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        Path(args.out).write_text(json.dumps({"seconds": timer.seconds, "batches": timer.batches,
                                              "test": result.metrics.get("test", {})}))


def throughput(args) -> None:
    from pykinml.db import open_engine, select_structures

    work = Path(tempfile.mkdtemp(prefix="pykinml-bench-"))
    db = c5h5_database(work)
    n_train = len(select_structures(open_engine(db), levels=["fidelity_1"], split="pykinml-mask", subsets=["train"], forces=False))
    results: dict = {"structures_per_epoch": n_train, "batch_size": 50, "network": "224-48-24-12-1 per element (C, H)"}
    for processes in args.processes:
        out = work / f"timing-{processes}.json"
        command = [sys.executable, __file__, "_worker", "--db", str(db), "--cache", str(work / "cache"),
                   "--run-dir", str(work / f"run-{processes}"), "--devices", str(processes),
                   "--epochs", str(args.epochs), "--out", str(out)]
        subprocess.run(command, check=True, cwd=work, stdout=subprocess.DEVNULL)
        timing = json.loads(out.read_text())
        seconds = timing["seconds"][1:]  # the first epoch warms caches and allocators
        rate = n_train * len(seconds) / sum(seconds)
        results[f"pykinml_{processes}_process"] = {"structures_per_second": rate, "epoch_seconds": timing["seconds"]}
        print(f"pykinml, {processes} process(es): {rate:,.0f} structures/s (epochs: "
              + ", ".join(f"{s:.2f}" for s in timing["seconds"]) + " s)")
    if args.original_epochs:
        sys.path.insert(0, str(HERE))
        from pykinml_original_env import original_python

        for config in ("shipped", "best"):
            out = work / f"original-{config}.json"
            subprocess.run([str(original_python()), str(HERE / "pykinml_original_runner.py"), "--out", str(out),
                            "--epochs", str(args.original_epochs), "--config", config], check=True, cwd=work)
            original = json.loads(out.read_text())
            results[f"original_{config}"] = original
        best_original = max(results[f"original_{c}"]["train_structures_per_second"] for c in ("shipped", "best"))
        for processes in args.processes:
            ratio = results[f"pykinml_{processes}_process"]["structures_per_second"] / best_original
            results[f"ratio_{processes}_process_vs_original_best"] = ratio
            print(f"pykinml {processes} process(es) / original (best configuration): {ratio:,.0f}x")
    save("throughput", results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    t.add_argument("--original-epochs", type=int, default=2, help="0: skip the original PyKinML")
    w = sub.add_parser("_worker")
    for name in ("--db", "--cache", "--run-dir", "--out"):
        w.add_argument(name, required=True)
    w.add_argument("--devices", type=int, default=1)
    w.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    {"throughput": throughput, "_worker": worker}[args.mode](args)


if __name__ == "__main__":
    main()
