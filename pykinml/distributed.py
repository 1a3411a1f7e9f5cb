"""What a data-parallel run needs beyond Lightning's DDP: one run directory for all processes, and a record
of which process trained on what (written to metrics.json, so a run shows that every rank took part).

Processes are started by Lightning itself (``trainer=ddp``), by SLURM's ``srun`` (``trainer=slurm``) or by
``torchrun`` (``trainer=torchrun``); each runs ``train()`` from the start, so each must arrive at the same
run directory without talking to the others first.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch.distributed as dist

from pykinml.errors import PykinmlError
from pykinml.shared_memory_allreduce import LOST_PEER_SIGN, SharedMemoryAllReduce

#: Set by the first process for the processes Lightning starts (they inherit its environment).
RUN_DIR_VARIABLE = "PYKINML_RUN_DIR"


def default_run_dir(fidelity: str) -> Path:
    """``runs/<fidelity>-<time>`` for one process; a name every process of a multi-process job agrees on.

    Lightning's own workers inherit the first process's choice; SLURM tasks share the job id; torchrun's
    workers have nothing in common to derive a name from, so there ``run_dir=`` is required.
    """
    inherited = os.environ.get(RUN_DIR_VARIABLE)
    if inherited:
        return Path(inherited)
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return Path("runs") / f"{fidelity}-slurm-{os.environ['SLURM_JOB_ID']}"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        if run_id in ("", "none"):
            raise PykinmlError(
                "run_dir is required when torchrun (or another launcher) starts the processes: every process must "
                "write to the same directory, e.g. run_dir=runs/my-run"
            )
        return Path("runs") / f"{fidelity}-{run_id}"
    return Path("runs") / f"{fidelity}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextmanager
def shared_run_dir(run_dir: Path) -> Iterator[None]:
    """While training, the processes Lightning starts (``trainer=ddp``) inherit this run directory; the variable
    is removed afterwards, so a later ``train()`` in the same Python process picks a directory of its own."""
    previous = os.environ.get(RUN_DIR_VARIABLE)
    os.environ[RUN_DIR_VARIABLE] = str(run_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_VARIABLE, None)
        else:
            os.environ[RUN_DIR_VARIABLE] = previous


class ProcessRecord(L.Callback):
    """Counts the training batches and structures this process handled (all epochs, and the last epoch)."""

    def __init__(self) -> None:
        self.batches = self.structures = self.epoch_structures = 0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epoch_structures = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        self.structures += len(batch)
        self.epoch_structures += len(batch)

    def gather(self, trainer: L.Trainer) -> dict:
        """Every process's record, collected on all of them (a collective: every rank must call it)."""
        mine = {
            "rank": trainer.global_rank, "node_rank": trainer.node_rank, "local_rank": trainer.local_rank,
            "host": socket.gethostname(), "slurm_node": os.environ.get("SLURMD_NODENAME"),
            "train_batches": self.batches, "train_structures": self.structures,
            "last_epoch_train_structures": self.epoch_structures,
        }
        ranks = [mine]
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            ranks = [None] * trainer.world_size
            dist.all_gather_object(ranks, mine)
        environment = getattr(trainer.strategy, "cluster_environment", None)
        return {
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "processes_per_node": trainer.num_devices,
            "launched_by": type(environment).__name__ if environment is not None else None,
            "backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
            "gradient_allreduce": _allreduce(trainer),
            "ranks": sorted(ranks, key=lambda record: record["rank"]),
        }


#: How gloo and NCCL report a peer that went away (crashed, killed, or its node failed).
_LOST_PEER = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "communicator was aborted",
              LOST_PEER_SIGN)


def lost_peer(error: BaseException) -> str | None:
    """The one-line explanation when ``error`` means another training process died, else None."""
    message = str(error)
    if not (isinstance(error, getattr(dist, "DistBackendError", ())) or any(sign in message for sign in _LOST_PEER)):
        return None
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or os.environ.get("LOCAL_RANK") or "0"
    detail = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return (
        f"process {rank} lost contact with another training process, which crashed, was killed or lost its node; "
        f"stopping (that process's own output says why; here: {detail[:200]})"
    )


def _allreduce(trainer: L.Trainer) -> str | None:
    """How the ranks averaged their gradients: ``shared memory`` or the backend's all-reduce (one process: None)."""
    if trainer.world_size <= 1:
        return None
    shared = next((c for c in trainer.callbacks if isinstance(c, SharedMemoryAllReduce)), None)
    if shared is not None and shared.used:
        return "shared memory"
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def leave_process_group() -> None:
    """End a finished multi-process run together: every rank waits for the others, then closes the process
    group. A rank that exits while another still talks to it can be aborted by gloo's threads at exit
    ("terminate called without an active exception", seen once with two torchrun nodes)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def describe(processes: dict) -> str:
    """One line for the end of a multi-process run: how it was launched and what each rank trained on."""
    shares = ", ".join(str(record["last_epoch_train_structures"]) for record in processes["ranks"])
    hosts = sorted({record["slurm_node"] or record["host"] for record in processes["ranks"]})
    return (
        f"processes: {processes['world_size']} ({processes['num_nodes']} node(s) x {processes['processes_per_node']}, "
        f"{processes['launched_by']}, {processes['backend']}, gradients all-reduced by {processes['gradient_allreduce']}) "
        f"on {', '.join(hosts)}; "
        f"training structures per process in the last epoch: {shares}"
    )


__all__ = ["ProcessRecord", "default_run_dir", "describe", "leave_process_group", "lost_peer", "shared_run_dir"]
