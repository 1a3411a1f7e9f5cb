"""DDP throughput benchmark (not a test): training structures per second with 1, 2, ... processes.

    python bench/ddp.py                                  # 1 and 2 CPU processes, both launchers
    python bench/ddp.py --processes 1 2 4 8 --accelerator gpu --launchers torchrun   # per GPU count
    python bench/ddp.py allreduce [--processes 2]       # one gradient all-reduce: shared memory vs gloo

Data: PyKinML's C5H5 set (../shared/data, energies and forces, 2048 training structures) when present,
else the bundled demo database (480). Network 224-48-24-12-1 per element (model=small), batch size per
process --batch-size, float32, one torch thread per process. Each process count runs
`pykinml-train` under each launcher: Lightning's own (`trainer=ddp`) and torchrun (`trainer=torchrun`);
1 process is the reference. Structures per second count training batches only (the first epoch, validation
and start-up excluded); the ratio to 1 process is printed. Numbers go to bench/results/ddp.json.

With N processes each takes every N-th structure of an epoch, so an epoch has 1/N of the steps, each
followed by an all-reduce of the gradients: on the CPUs of one machine through shared memory
(pykinml/shared_memory_allreduce.py), and with `--allreduce gloo` as well through gloo for comparison
(NCCL on GPUs). On a 2-core machine two processes can at best double the rate.

`allreduce` times the all-reduce alone: N processes average the gradients of the C5H5 networks (2 x 12,289
float32 numbers, 98.3 kB) 500 times each way, in the same run; the ratio is gloo's time over shared memory's.
Numbers go to bench/results/ddp.json [allreduce].
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


def run(work: Path, launcher: str, processes: int, base: list[str], args, allreduce: str = "shared") -> dict:
    tag = f"{launcher}-{processes}-{allreduce}"
    out = work / f"timing-{tag}.json"
    overrides = [*base, f"run_dir={work / ('run-' + tag)}", f"cache_dir={work / 'cache'}",
                 f"data.batch_size={args.batch_size}", f"trainer.accelerator={args.accelerator}"]
    if processes > 1 and args.accelerator == "cpu":
        overrides.append(f"trainer.shared_memory_allreduce={'true' if allreduce == 'shared' else 'false'}")
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
    processes_record = timing["metrics"]["processes"]
    return {"launcher": launcher if processes > 1 else "none", "processes": processes,
            "gradient_allreduce": processes_record.get("gradient_allreduce"),
            "structures_per_epoch": n_train, "structures_per_second": n_train * len(seconds) / sum(seconds),
            "epoch_seconds": timing["seconds"], "wall_seconds": time.perf_counter() - start}


def _allreduce_rank(rank: int, world: int, port: int, calls: int, out: str) -> None:
    """One process of the all-reduce benchmark: the same buckets averaged by gloo and through shared memory."""
    import torch
    import torch.distributed as dist

    from pykinml.shared_memory_allreduce import SharedMemoryAllReduce

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    values = 2 * (224 * 48 + 48 + 48 * 24 + 24 + 24 * 12 + 12 + 12 + 1)  # 224-48-24-12-1 networks for C and H
    shared = SharedMemoryAllReduce()
    if not shared.open(values):
        raise SystemExit("shared-memory all-reduce is not available here (Linux on x86-64 with /dev/shm)")
    gradients = torch.randn(values, generator=torch.Generator().manual_seed(rank))
    expected = sum(torch.randn(values, generator=torch.Generator().manual_seed(r)) for r in range(world)) / world
    check = gradients.clone()
    shared.reduce(check)
    assert torch.allclose(check, expected, rtol=1e-6, atol=1e-7)

    def gloo(tensor):
        tensor.div_(world)
        dist.all_reduce(tensor)

    timings = {}
    for name, reduce in (("gloo", gloo), ("shared memory", shared.reduce)):
        for _ in range(20):
            reduce(gradients)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(calls):
            reduce(gradients)
        timings[name] = (time.perf_counter() - start) / calls
    if rank == 0:
        Path(out).write_text(json.dumps({"values": values, "bytes": 4 * values, "processes": world, "calls": calls,
                                         "seconds_per_call": timings}))
    dist.destroy_process_group()


def allreduce_bench(processes: int, calls: int) -> None:
    import torch.multiprocessing as mp

    out = Path(tempfile.mkdtemp(prefix="pykinml-allreduce-bench-")) / "allreduce.json"
    mp.spawn(_allreduce_rank, args=(processes, free_port(), calls, str(out)), nprocs=processes)
    result = json.loads(out.read_text())
    per_call = result["seconds_per_call"]
    result["ratio_gloo_over_shared_memory"] = per_call["gloo"] / per_call["shared memory"]
    print(f"all-reduce of {result['values']:,} float32 ({result['bytes'] / 1000:.1f} kB), {processes} processes, "
          f"{calls} calls: gloo {1000 * per_call['gloo']:.3f} ms, shared memory {1000 * per_call['shared memory']:.3f} ms "
          f"per call = {result['ratio_gloo_over_shared_memory']:.1f}x faster")
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    saved["allreduce"] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"wrote {RESULTS} [allreduce]")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_worker":  # _worker OUT OVERRIDE...
        worker(argparse.Namespace(out=sys.argv[2], overrides=sys.argv[3:]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "allreduce":
        parser = argparse.ArgumentParser(description="one gradient all-reduce: shared memory vs gloo")
        parser.add_argument("--processes", type=int, default=2)
        parser.add_argument("--calls", type=int, default=500)
        args = parser.parse_args(sys.argv[2:])
        allreduce_bench(args.processes, args.calls)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--launchers", nargs="+", choices=("lightning", "torchrun"), default=["lightning", "torchrun"])
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=50, help="per process (default: 50)")
    parser.add_argument("--allreduce", nargs="+", choices=("shared", "gloo"), default=["shared", "gloo"],
                        help="gradient all-reduces to time with several CPU processes (default: both)")
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
            for allreduce in args.allreduce if processes > 1 and args.accelerator == "cpu" else ["shared"]:
                rows.append(run(work, launcher, processes, base, args, allreduce))
    reference = next(row for row in rows if row["processes"] == 1)["structures_per_second"]
    for row in rows:
        row["ratio_to_1_process"] = row["structures_per_second"] / reference
        print(f"{row['processes']} process(es), launcher {row['launcher']:>9}, all-reduce {row['gradient_allreduce'] or '-':>13}: "
              f"{row['structures_per_second']:8,.0f} "
              f"structures/s  = {row['ratio_to_1_process']:.2f}x 1 process  (wall {row['wall_seconds']:.0f} s)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    saved.update({"data": described, "accelerator": args.accelerator, "cpus": os.cpu_count(),
                  "batch_size_per_process": args.batch_size, "runs": rows})
    RESULTS.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
