"""DDP throughput benchmark (not a test): training structures per second with 1, 2, ... processes.

    python bench/ddp.py                                  # 1 and 2 CPU processes, both launchers
    python bench/ddp.py --processes 1 2 4 8 --accelerator gpu --launchers torchrun   # per GPU count

Data: PyKinML's C5H5 set (../shared/data, energies and forces, 2048 training structures) when present,
else the bundled demo database (480). Network 224-48-24-12-1 per element (model=small), batch size per
process --batch-size, float32, one torch thread per process. Each process count runs
`pykinml-train` under each launcher: Lightning's own (`trainer=ddp`) and torchrun (`trainer=torchrun`);
1 process is the reference. Structures per second count training batches only (the first epoch, validation
and start-up excluded); the ratio to 1 process is printed. Numbers go to bench/results/ddp.json.

With N processes each takes every N-th structure of an epoch, so an epoch has 1/N of the steps, each
followed by an all-reduce of the gradients (gloo on CPU, NCCL on GPUs). On a 2-core machine two processes
can at best double the rate.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train import C5H5_DB, c5h5_database, epoch_timer  # noqa: E402  (bench/train.py)

RESULTS = HERE / "results" / "ddp.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_overrides(work: Path) -> tuple[list[str], str]:
    if C5H5_DB.is_file():
        return ["experiment=c5h5", f"data.db={c5h5_database(work)}"], "C5H5 (PyKinML, 10 atoms)"
    from pykinml.demo import DEMO_DB

    return [f"data.db={DEMO_DB}"], "bundled demo database (3-9 atoms)"


def worker(args) -> None:
    """One process of a run (every rank runs this); rank 0 writes the epoch timings."""
    from pykinml.config import compose_config
    from pykinml.train import quiet_lightning, train

    quiet_lightning()
    timer = epoch_timer()
    result = train(compose_config(args.overrides), callbacks=[timer])
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
        Path(args.out).write_text(json.dumps({"seconds": timer.seconds, "metrics": result.metrics}))


def run(work: Path, launcher: str, processes: int, base: list[str], args) -> dict:
    tag = f"{launcher}-{processes}"
    out = work / f"timing-{tag}.json"
    overrides = [*base, f"run_dir={work / ('run-' + tag)}", f"cache_dir={work / 'cache'}",
                 f"data.batch_size={args.batch_size}", f"trainer.accelerator={args.accelerator}"]
    script = [str(Path(__file__).resolve()), "_worker", str(out)]
    if processes == 1:
        command = [sys.executable, *script, *overrides]
    elif launcher == "lightning":
        command = [sys.executable, *script, *overrides, "trainer=ddp", f"trainer.devices={processes}"]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}",
                   "--master-addr=127.0.0.1", f"--master-port={free_port()}", *script, *overrides, "trainer=torchrun"]
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    timing = json.loads(out.read_text())
    seconds = timing["seconds"][1:]  # the first epoch warms caches and allocators
    n_train = sum(record["last_epoch_train_structures"] for record in timing["metrics"]["processes"]["ranks"])
    return {"launcher": launcher if processes > 1 else "none", "processes": processes,
            "structures_per_epoch": n_train, "structures_per_second": n_train * len(seconds) / sum(seconds),
            "epoch_seconds": timing["seconds"], "wall_seconds": time.perf_counter() - start}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_worker":  # _worker OUT OVERRIDE...
        worker(argparse.Namespace(out=sys.argv[2], overrides=sys.argv[3:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--launchers", nargs="+", choices=("lightning", "torchrun"), default=["lightning", "torchrun"])
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=50, help="per process (default: 50)")
    args = parser.parse_args()
    args.processes = sorted(set(args.processes) | {1})  # 1 process is the reference
    work = Path(tempfile.mkdtemp(prefix="pykinml-ddp-bench-"))
    data, described = data_overrides(work)
    base = [*data, "model=small", f"trainer.max_epochs={args.epochs}", "trainer.max_time=null", "scheduler=none",
            "trainer.progress_bar=false", "logger=csv"]
    print(f"data: {described}; batch {args.batch_size} per process; {args.accelerator}; {args.epochs} epochs per run")
    rows = []
    for processes in args.processes:
        for launcher in args.launchers if processes > 1 else ["none"]:
            row = run(work, launcher, processes, base, args)
            rows.append(row)
    reference = next(row for row in rows if row["processes"] == 1)["structures_per_second"]
    for row in rows:
        row["ratio_to_1_process"] = row["structures_per_second"] / reference
        print(f"{row['processes']} process(es), launcher {row['launcher']:>9}: {row['structures_per_second']:8,.0f} "
              f"structures/s  = {row['ratio_to_1_process']:.2f}x 1 process  (wall {row['wall_seconds']:.0f} s)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"data": described, "accelerator": args.accelerator, "cpus": os.cpu_count(),
                                   "batch_size_per_process": args.batch_size, "runs": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
