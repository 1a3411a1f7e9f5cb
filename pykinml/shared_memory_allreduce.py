"""DDP's gradient all-reduce through shared memory, for data-parallel training on the CPU cores of one machine.

Gloo all-reduces over loopback TCP: 2–3 ms per call here whatever the size (0.6 ms for one number), where a
training step of a small potential takes 15–20 ms. Processes on one machine can instead meet in one
shared-memory file: each copies its gradients (already divided by the number of processes, as DDP's own hook
does) into its slot, publishes a step counter, waits until every counter has arrived, and sums the slots in
rank order, so every rank gets the same bits. 0.15–0.22 ms per call for the 98 kB of the C5H5 networks, where
gloo took 1.9–3.3 ms (``python bench/ddp.py allreduce``).

It is used only where it is safe: every process on one host (one node), on CPUs, on x86-64 (whose memory
order makes "data, then counter" visible in that order; elsewhere gloo is kept), Linux with /dev/shm and
/proc. Everywhere else, and with ``trainer.shared_memory_allreduce=false``, DDP's gloo or NCCL all-reduce runs.
A process that died is noticed within a tenth of a second (its /proc entry is gone or a zombie), and the wait
ends with the same "lost contact" error gloo gives.

SIGTERM rides along too. Lightning (2.5+) broadcasts rank 0's SIGTERM flag over the process group before every
training step, and again from its signal handler: a gloo round trip and a second meeting of the ranks per
step, which took a third of a C5H5 step on 2 cores (Lightning-AI/pytorch-lightning#21487). Here each rank
publishes its flag with its gradients instead; once any rank's flag arrives, every rank marks the trainer as
terminated after that same step's all-reduce, so all of them stop at the end of that step together (the first
training step after the signal; one during validation waits for the next epoch's first step) and no rank waits
in a collective for another that left.
"""

import os
import platform
import socket
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

#: Bytes between step counters: each rank's counter on a cache line of its own.
_COUNTER_STRIDE = 64
#: How often a waiting process checks that the others are still alive (seconds).
_LIVENESS_INTERVAL = 0.1
#: What :func:`pykinml.distributed.lost_peer` recognises in the error raised when a peer died.
LOST_PEER_SIGN = "shared-memory all-reduce: training process"


def supported() -> bool:
    """Linux on x86-64, with /dev/shm and /proc: where the file, the liveness checks and the memory order hold."""
    return (platform.system() == "Linux" and platform.machine().lower() in ("x86_64", "amd64")
            and os.path.isdir("/dev/shm") and os.path.exists("/proc/self/stat"))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a killed child that its parent has not reaped yet is a zombie: dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _create(size: int) -> str | None:
    """A file of ``size`` bytes in /dev/shm with its pages reserved (a tmpfs too small to hold it would kill
    the process with SIGBUS at the first write, not fail here), or None where that cannot be had."""
    try:
        handle, path = tempfile.mkstemp(prefix="pykinml-allreduce-", dir="/dev/shm")
    except OSError:
        return None
    try:
        os.posix_fallocate(handle, 0, size)
    except OSError:
        os.unlink(path)
        return None
    finally:
        os.close(handle)
    return path


class SharedMemoryAllReduce(L.Callback):
    """The state of :func:`shared_memory_allreduce_hook`: opened by every rank when fitting starts, closed at the end.

    ``active`` is decided by all ranks together (an all-reduce of each rank's verdict), so either every rank
    uses shared memory or every rank uses the backend's all-reduce.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.active = False
        self.used = False  # whether the last fit averaged its gradients here (kept after the fit, for the record)
        self.rank = self.world = 0
        self.pids: list[int] = []
        self.sequence = 0
        self.terminate = False  # this process received SIGTERM (published with its next gradients)
        self._file: torch.Tensor | None = None
        self._capacity = 0
        self._trainer: L.Trainer | None = None
        self._replaced: list[tuple[object, str]] = []

    # --- Lightning hooks ------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.connect(trainer, pl_module)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers communication hooks on CUDA only; DDP has wrapped the module by now.
        model = trainer.strategy.model
        if self.active and isinstance(model, DistributedDataParallel):
            model.register_comm_hook(self, shared_memory_allreduce_hook)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.active, self._file, self._trainer = False, None, None
            for owner, name in self._replaced:
                vars(owner).pop(name, None)  # Lightning's own methods again (a later test or fit)
            self._replaced = []

    # --- opening the shared file ----------------------------------------------------------------------
    def connect(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Open the file for a fit (every rank calls this), sized for the module's trainable parameters."""
        self.active = self.used = False
        # Conditions every rank sees alike (the process group is gloo then: NCCL would need CUDA tensors below).
        if (self.enabled and dist.is_available() and dist.is_initialized() and trainer.world_size > 1
                and trainer.num_nodes == 1 and trainer.strategy.root_device.type == "cpu" and supported()):
            if self.open(sum(p.numel() for p in pl_module.parameters() if p.requires_grad)):
                self._take_over_sigterm(trainer)

    def _take_over_sigterm(self, trainer: L.Trainer) -> None:
        """Replace Lightning's per-step SIGTERM broadcast, and the broadcast in its signal handler, by the flags
        published with the gradients (before Lightning installs its handlers, which happens after setup).
        A Lightning without these methods keeps its own handling."""
        connector, loop = trainer._signal_connector, trainer.fit_loop.epoch_loop
        if not (callable(getattr(connector, "_sigterm_notifier_fn", None))
                and callable(getattr(loop, "_broadcast_sigterm_tensor", None))):
            return
        self._trainer, self.terminate = trainer, False
        connector._sigterm_notifier_fn = self._note_sigterm
        loop._broadcast_sigterm_tensor = _decided_with_the_gradients
        self._replaced = [(connector, "_sigterm_notifier_fn"), (loop, "_broadcast_sigterm_tensor")]

    def _note_sigterm(self, signum, frame) -> None:
        """SIGTERM handler: what Lightning's does (pass the signal on to the processes this one launched, once),
        without its collective; the flag goes out with the next gradients, so a signal during validation stops
        the run after the next training step (and one after the last step lets the run finish)."""
        trainer = self._trainer
        if trainer is None:
            return
        if not self.terminate and trainer.strategy.launcher is not None:
            trainer.strategy.launcher.kill(signum)
        self.terminate = True  # not received_sigterm: Lightning's loops would act on it here alone (e.g. after
        # this rank's validation, while the others start the next epoch); the flags decide for all ranks at once

    def open(self, values: int) -> bool:
        """Every rank of the default (CPU) process group calls this, for buckets of up to ``values`` numbers:
        rank 0 creates the file and names it to the others; all agree whether every rank could use it (the
        answer)."""
        self._file, self.sequence = None, 0
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        # Room for every gradient in double precision: a slot per rank, twice (alternate steps; see reduce).
        self._capacity = 8 * values
        size = _COUNTER_STRIDE * self.world + 2 * self.world * self._capacity
        path = _create(size) if self.rank == 0 and supported() else None
        shared = [path, socket.gethostname()]
        dist.broadcast_object_list(shared, src=0)
        peers: list = [None] * self.world
        dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
        ok = shared[0] is not None and all(host == shared[1] and _alive(pid) for host, pid in peers)
        if ok:
            try:
                self._file = torch.from_file(shared[0], shared=True, size=size, dtype=torch.uint8)
            except (OSError, RuntimeError):
                ok = False
        verdict = torch.tensor([1 if ok else 0], dtype=torch.int32)
        dist.all_reduce(verdict, op=dist.ReduceOp.MIN)
        dist.barrier()  # every rank has mapped the file (or given up) before it goes
        if path is not None:
            os.unlink(path)  # the mappings keep it; nothing is left behind if a process dies
        self.active = self.used = bool(verdict.item())
        self.pids = [pid for _, pid in peers]
        if not self.active:
            self._file = None
        return self.active

    # --- the all-reduce ---------------------------------------------------------------------------------
    def _header(self) -> torch.Tensor:
        """(world, 8) int64, a cache line per rank: [0] its step counter, [1 + parity] its SIGTERM flag."""
        return self._file[: _COUNTER_STRIDE * self.world].view(torch.int64).view(self.world, _COUNTER_STRIDE // 8)

    def _slots(self, parity: int, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """(world, numel) slots of this step's parity, in ``dtype``."""
        start = _COUNTER_STRIDE * self.world + parity * self.world * self._capacity
        block = self._file[start: start + self.world * self._capacity].view(self.world, self._capacity)
        width = numel * torch.empty((), dtype=dtype).element_size()
        return block[:, :width].view(dtype)

    def reduce(self, gradients: torch.Tensor) -> torch.Tensor:
        """Average ``gradients`` (a flat bucket) over the ranks, in place; every rank ends with the same values."""
        if gradients.numel() * gradients.element_size() > self._capacity:
            raise RuntimeError(f"a gradient bucket of {gradients.numel()} values exceeds the shared buffer")
        self.sequence += 1
        # Slots alternate between steps: a rank writes step s + 2 only after every rank announced step s + 1,
        # and each rank announces s + 1 only after it has read step s's slots.
        slots = self._slots(self.sequence % 2, gradients.dtype, gradients.numel())
        gradients.div_(self.world)
        slots[self.rank].copy_(gradients)
        header = self._header()
        flags, counters = header[:, 1 + self.sequence % 2], header[:, 0]
        flags[self.rank] = int(self.terminate)  # alternates like the slots: read before anyone rewrites it
        counters[self.rank] = self.sequence
        self._wait(counters)
        torch.sum(slots, dim=0, out=gradients)
        if self._trainer is not None and bool(flags.any()):
            self._trainer._signal_connector.received_sigterm = True  # every rank, after the same step
        return gradients

    def _wait(self, counters: torch.Tensor) -> None:
        checked = time.monotonic()
        while int(counters.min()) < self.sequence:
            os.sched_yield()  # give the core away if another process needs it (more processes than cores)
            now = time.monotonic()
            if now - checked > _LIVENESS_INTERVAL:
                checked = now
                for rank, pid in enumerate(self.pids):
                    if int(counters[rank]) < self.sequence and not _alive(pid):
                        raise RuntimeError(f"{LOST_PEER_SIGN} {rank} (pid {pid}) ended while the others waited for its gradients")


def _decided_with_the_gradients() -> None:
    """Stands in for Lightning's per-step SIGTERM broadcast: the ranks agreed during the last all-reduce."""


def shared_memory_allreduce_hook(state: SharedMemoryAllReduce, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook (registered only where the shared file is open on every rank): the average."""
    future: torch.futures.Future = torch.futures.Future()
    future.set_result(state.reduce(bucket.buffer()))
    return future
