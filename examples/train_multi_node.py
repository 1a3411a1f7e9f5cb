"""Data-parallel (DDP) training on several processes, GPUs or nodes, with or without SLURM.

The same training as ``examples/train_single_fid.py`` (or ``--fidelity delta|multi``) on several processes:
every process trains on its share of each epoch's batches and gradients are averaged (NCCL on GPUs, gloo on
CPUs). Global rank 0 builds the AEV cache once; the other processes read it through memory maps, so on a
cluster point ``PYKINML_CACHE_DIR`` (or ``--cache-dir``) at a file system every node sees.

- **Under SLURM** (``srun python examples/train_multi_node.py ...`` in an sbatch script, one task per GPU;
  ``slurm/train_multinode.sbatch`` is the ready-made template, which runs ``pykinml-train trainer=slurm``):
  SLURM starts one process per task, ``trainer=slurm`` takes the nodes and processes per node from the job
  and Lightning's ``SLURMEnvironment`` the ranks, the main node's address and the port. ``--devices`` is
  ignored.
- **Without SLURM**: one node, ``--devices`` processes (default 2) started by Lightning itself
  (``trainer=ddp``), on the CPU unless ``--accelerator gpu``.

    python examples/train_multi_node.py                            # 2 CPU processes, demo database, 40 epochs
    python examples/train_multi_node.py --devices 4 --accelerator gpu --epochs 200
    srun python examples/train_multi_node.py --epochs 500          # inside an sbatch script

With 2 CPU processes on a 2-core machine the defaults take about a minute.
"""

from __future__ import annotations

import argparse
import time

from example_args import database_overrides, hydra_string, neurons_override, run_main, widths


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
    parser.add_argument("--run-dir", help="where the run writes (default: runs/<fidelity>-slurm-<job id> under SLURM, else runs/<fidelity>-<date>-<time>)")
    parser.add_argument("--cache-dir", help="AEV cache root shared by all nodes (default: $PYKINML_CACHE_DIR or ~/.cache/pykinml)")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    parser.add_argument("overrides", nargs="*", help="more pykinml-train overrides, e.g. data.batch_size=128")
    args = parser.parse_intermixed_args(argv)
    if args.db is not None and not args.levels:
        parser.error("--db needs --levels (one for --fidelity single, low and high for delta, low ... high for multi)")
    return args


def under_slurm() -> bool:
    """Whether SLURM started this process as one task of a job, as Lightning's SLURMEnvironment sees it."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()  # False without SLURM, or in an interactive shell (salloc)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch
    from lightning.pytorch.utilities import rank_zero_only

    from pykinml.config import compose_config
    from pykinml.train import quiet_lightning, train

    quiet_lightning()

    slurm = under_slurm()
    accelerator = args.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    # Nodes and processes per node: from the job under SLURM (trainer=slurm), else --devices on this node.
    # The run directory: --run-dir, else pykinml's default, which every process of the job agrees on
    # (runs/<fidelity>-slurm-<job id> under SLURM; the first process's choice for the ones Lightning starts).
    launch = ["trainer=slurm"] if slurm else ["trainer=ddp", "trainer.num_nodes=1", f"trainer.devices={args.devices}"]
    overrides = [
        f"fidelity={args.fidelity}", *launch, f"trainer.accelerator={accelerator}", f"trainer.max_epochs={args.epochs}",
        f"trainer.progress_bar={str(args.progress).lower()}", f"data.split={hydra_string(args.split)}",
    ]
    if args.run_dir is not None:
        overrides.append(f"run_dir={hydra_string(args.run_dir)}")
    overrides += database_overrides(args.db, args.levels)
    overrides += neurons_override(args.neurons)
    if args.cache_dir:
        overrides.append(f"cache_dir={hydra_string(args.cache_dir)}")
    config = compose_config(overrides + list(args.overrides))
    nodes, per_node = config.trainer.num_nodes, config.trainer.devices
    if rank_zero_only.rank == 0:
        print(f"DDP training ({args.fidelity} fidelity on {', '.join(config.data.levels)}): {nodes} node(s) x {per_node} "
              f"{accelerator.upper()} process(es) = {nodes * per_node}, {'started by SLURM' if slurm else 'started by Lightning'}; "
              f"{args.epochs} epochs, batch size {config.data.batch_size} per process", flush=True)
    start = time.perf_counter()
    result = train(config)  # rank 0 prints the validation and test errors and writes metrics.json
    if rank_zero_only.rank == 0:
        test = result.metrics.get("test", {})
        print(f"\ntrained in {time.perf_counter() - start:.0f} s on {nodes * per_node} processes; test errors of the best checkpoint:")
        for name in sorted({key.split("/")[0] for key in test if "/" in key}):
            line = f"  {name}: energy RMSE {test[f'{name}/energy_rmse_kcal_mol']:.3f} kcal/mol"
            if f"{name}/force_rmse_kcal_mol_a" in test:
                line += f", force RMSE {test[f'{name}/force_rmse_kcal_mol_a']:.3f} kcal/mol/Å ({test[f'{name}/force_rmse_ev_a']:.4f} eV/Å)"
            print(line)
        print(f"run directory: {result.run_dir}; best checkpoint: {result.best_checkpoint}")
    return 0


if __name__ == "__main__":
    run_main(main)
