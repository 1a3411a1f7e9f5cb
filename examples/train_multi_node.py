"""Data-parallel (DDP) training on several processes, GPUs or nodes, with or without SLURM.

The same training as ``examples/train_single_fid.py`` (or ``--fidelity delta|multi``) with
``trainer=ddp``: every process trains on its share of each epoch's batches and gradients are averaged
(NCCL on GPUs, gloo on CPUs). Rank 0 of each node builds the AEV cache once; the other processes read
it through memory maps, so on a cluster point ``PYKINML_CACHE_DIR`` (or ``--cache-dir``) at a file
system every node sees.

- **Under SLURM** (``srun python examples/train_multi_node.py ...`` in an sbatch script; see
  ``slurm/train_multi_node.sbatch``): SLURM starts one process per task and Lightning's
  ``SLURMEnvironment`` reads ranks, the main node's address and the port from the job. The number of
  nodes and of processes per node come from SLURM_NNODES and SLURM_NTASKS_PER_NODE; ``--devices`` is
  ignored. One task per GPU on GPU nodes.
- **Without SLURM**: one node, ``--devices`` processes (default 2) started by Lightning itself, on
  the CPU unless ``--accelerator gpu``.

    python examples/train_multi_node.py                            # 2 CPU processes, demo database, 40 epochs
    python examples/train_multi_node.py --devices 4 --accelerator gpu --epochs 200
    sbatch slurm/train_multi_node.sbatch                           # N nodes x M GPUs under SLURM

With 2 CPU processes on a 2-core machine the defaults take about a minute.
"""

from __future__ import annotations

import argparse
import os
import time

from example_args import database_overrides, hydra_string, neurons_override, run_main, widths

from pykinml.errors import PykinmlError


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="a pykinml database (path or SQLAlchemy URL); default: the bundled demo database")
    parser.add_argument("--levels", nargs="+", metavar="LEVEL", help="levels low -> high (needed with --db)")
    parser.add_argument("--split", default="default", help="the split stored in the database (default: default)")
    parser.add_argument("--fidelity", choices=("single", "delta", "multi"), default="single", help="default: single")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs (default: 40)")
    parser.add_argument("--neurons", type=widths, help="hidden layer widths (default: the ani preset's 160,128,96)")
    parser.add_argument("--devices", type=int, default=2,
                        help="processes on this node when not under SLURM (default: 2); under SLURM: SLURM_NTASKS_PER_NODE")
    parser.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto",
                        help="auto (default): GPUs when CUDA sees any, else the CPU")
    parser.add_argument("--run-dir", help="where the run writes (default: runs/ddp-<SLURM job id> or runs/ddp-<date>-<time>)")
    parser.add_argument("--cache-dir", help="AEV cache root shared by all nodes (default: $PYKINML_CACHE_DIR or ~/.cache/pykinml)")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    parser.add_argument("overrides", nargs="*", help="more pykinml-train overrides, e.g. data.batch_size=128")
    args = parser.parse_intermixed_args(argv)
    if args.db is not None and not args.levels:
        parser.error("--db needs --levels (one for --fidelity single, low and high for delta, low ... high for multi)")
    return args


def processes() -> tuple[int | None, int | None, bool]:
    """(nodes, processes per node, under SLURM) as SLURM sets them, as Lightning's SLURMEnvironment sees the job."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():  # no SLURM, or an interactive shell (salloc): Lightning starts the processes
        return None, None, False
    nodes = int(os.environ.get("SLURM_NNODES", "1"))
    per_node = os.environ.get("SLURM_NTASKS_PER_NODE")
    if per_node is None:
        raise PykinmlError("under SLURM give #SBATCH --ntasks-per-node=<processes per node> (one per GPU); "
                           "Lightning does not accept --ntasks alone")
    return nodes, int(per_node.split("(")[0]), True


def rank() -> int:
    """This process's global rank before training starts (SLURM's task id, or Lightning's LOCAL_RANK on one node)."""
    return int(os.environ.get("SLURM_PROCID") or os.environ.get("LOCAL_RANK") or 0)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    from pykinml.config import compose_config
    from pykinml.train import quiet_lightning, train

    quiet_lightning()

    nodes, per_node, slurm = processes()
    if not slurm:
        nodes, per_node = 1, args.devices
    accelerator = args.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    # Every process must write to the same run directory: the processes Lightning starts inherit this
    # one's environment, and under SLURM the job id names it.
    # Resuming (a ckpt_path= override) continues in the checkpoint's own run directory unless --run-dir says otherwise.
    resuming = any(override.startswith("ckpt_path=") for override in args.overrides)
    run_dir = args.run_dir or os.environ.get("PYKINML_EXAMPLE_RUN_DIR")
    if run_dir is None and not resuming:
        job = os.environ.get("SLURM_JOB_ID") if slurm else None
        run_dir = f"runs/ddp-{job}" if job else f"runs/ddp-{time.strftime('%Y%m%d-%H%M%S')}"
        os.environ["PYKINML_EXAMPLE_RUN_DIR"] = run_dir

    overrides = [
        f"fidelity={args.fidelity}", "trainer=ddp", f"trainer.accelerator={accelerator}",
        f"trainer.num_nodes={nodes}", f"trainer.devices={per_node}", f"trainer.max_epochs={args.epochs}",
        f"trainer.progress_bar={str(args.progress).lower()}", f"data.split={hydra_string(args.split)}",
    ]
    if run_dir is not None:
        overrides.append(f"run_dir={hydra_string(run_dir)}")
    overrides += database_overrides(args.db, args.levels)
    overrides += neurons_override(args.neurons)
    if args.cache_dir:
        overrides.append(f"cache_dir={hydra_string(args.cache_dir)}")
    config = compose_config(overrides + list(args.overrides))
    if rank() == 0:
        print(f"DDP training ({args.fidelity} fidelity on {', '.join(config.data.levels)}): {nodes} node(s) x {per_node} "
              f"{accelerator.upper()} process(es) = {nodes * per_node}, {'started by SLURM' if slurm else 'started by Lightning'}; "
              f"{args.epochs} epochs, batch size {config.data.batch_size} per process -> {run_dir or 'the run of the checkpoint'}",
              flush=True)
    start = time.perf_counter()
    result = train(config)  # rank 0 prints the validation and test errors and writes metrics.json

    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        test = result.metrics.get("test", {})
        print(f"\ntrained in {time.perf_counter() - start:.0f} s on {nodes * per_node} processes; test errors of the best checkpoint:")
        for name in sorted({key.split("/")[0] for key in test if "/" in key}):
            line = f"  {name}: energy RMSE {test[f'{name}/energy_rmse_kcal_mol']:.3f} kcal/mol"
            if f"{name}/force_rmse_kcal_mol_a" in test:
                line += f", force RMSE {test[f'{name}/force_rmse_kcal_mol_a']:.3f} kcal/mol/Å ({test[f'{name}/force_rmse_ev_a']:.4f} eV/Å)"
            print(line)
        print(f"best checkpoint: {result.best_checkpoint}")
    return 0


if __name__ == "__main__":
    run_main(main)
