"""The LightningDataModule: batches of cached AEVs (and Jacobian rows) with their targets.

Under DDP, global rank 0 builds the AEV cache in ``prepare_data``; every rank then opens it through memory
maps (on a node that does not see rank 0's file system, that node's rank 0 builds its own copy first).
Training batches are reshuffled every epoch by a DistributedSampler seeded with ``seed`` + epoch, so a run
resumed from a checkpoint sees exactly the batches an uninterrupted run would, and each rank gets a disjoint
share of every epoch. Validation and test structures are dealt out without padding, so every structure is
counted exactly once in the errors.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from pykinml.aev.computer import pack
from pykinml.aev.params import AEVParams
from pykinml.data.batches import Batch, owner_of
from pykinml.data.cache import AEVCache
from pykinml.data.precompute import precompute
from pykinml.data.training import TrainingData
from pykinml.db.query import ragged_rows
from pykinml.errors import PykinmlError


class PotentialDataModule(L.LightningDataModule):
    def __init__(
        self,
        data: TrainingData,
        params: AEVParams,
        *,
        forces: bool,
        force_mode: str = "jacobian",
        dtype: str = "float32",
        batch_size: int = 50,
        eval_batch_size: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        precompute_workers: int = 1,
        progress: bool = True,
        high_level_repeats: int = 1,
        stress: bool = False,
    ):
        super().__init__()
        self.data, self.params = data, params
        self.forces, self.force_mode, self.dtype = forces, force_mode, dtype
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.seed, self.cache_dir, self.precompute_workers, self.progress = seed, cache_dir, precompute_workers, progress
        self.high_level_repeats = int(high_level_repeats)
        self.stress = bool(stress)
        self.cache: AEVCache | None = None
        self.torch_dtype = torch.float64 if dtype == "float64" else torch.float32
        self.prepare_data_per_node = False  # one build for the job; setup covers nodes with a cache dir of their own

    @property
    def uses_cache(self) -> bool:
        """Cached AEVs serve energies, and with their Jacobian rows forces and stress; ``force_mode=autograd``
        takes the derivatives through the AEV of the geometries instead."""
        return self.force_mode == "jacobian" or not (self.forces or self.stress)

    @property
    def cached_jacobian(self) -> bool:
        """Whether the cache holds Jacobian rows: forces and stress are contractions of them."""
        return self.forces or self.stress

    def _build_cache(self, progress: bool) -> AEVCache:
        return precompute(
            self.data.selection, self.params, dtype=self.dtype, jacobian=self.cached_jacobian, cache_dir=self.cache_dir,
            source=self.data.source, progress=progress, workers=self.precompute_workers,
        )

    def prepare_data(self) -> None:
        if self.uses_cache:
            self._build_cache(self.progress)

    def setup(self, stage: str | None = None) -> None:
        if self.uses_cache and self.cache is None:
            trainer = self.trainer
            if trainer is not None and trainer.world_size > 1:
                # Global rank 0 built the cache in prepare_data. A node whose cache directory it cannot see
                # builds its own copy on its local rank 0 while the node's other ranks wait; every rank
                # takes part in the barrier, so no rank can pass it before its node's copy is whole.
                if trainer.local_rank == 0:
                    self.cache = self._build_cache(False)
                trainer.strategy.barrier("pykinml-aev-cache")
            if self.cache is None:
                self.cache = self._build_cache(False)  # complete by now: opens it
        self._check_shards()

    def _check_shards(self) -> None:
        """Every process needs at least one validation (and test) structure: a rank without any would
        leave the others waiting for it in the end-of-epoch reductions."""
        world = self.trainer.world_size if self.trainer is not None else 1
        for subset in ("val", "test"):
            count = len(self.epoch_rows(subset))
            if 0 < count < world:
                raise PykinmlError(
                    f"the {subset} set has {count} structure(s), fewer than the {world} training processes; "
                    f"give each process at least one (a larger {subset} fraction, or fewer processes)"
                )

    def collate(self, rows: list[int]) -> Batch:
        """Gather the structures at selection positions ``rows`` (sorted) into one :class:`Batch`."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        selection, targets = self.data.selection, self.data.targets
        natoms = selection.natoms[rows]
        atoms = ragged_rows(selection.offsets[rows], natoms)
        offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(natoms)]).astype(np.int64))
        aev = jacobian = structures = None
        if self.uses_cache:
            cached = self.cache.batch(rows, jacobian=self.cached_jacobian)
            species, aev, jacobian = cached.species, cached.aev, cached.jacobian
        else:
            structures = pack(
                self.params, selection.numbers[atoms], selection.positions[atoms], offsets.numpy(),
                selection.cells[rows], selection.pbc[rows], dtype=self.torch_dtype, ids=selection.ids[rows],
            )
            species = structures.species
        force_mask = torch.from_numpy(np.repeat(targets.force_mask[:, rows], natoms, axis=1))
        return Batch(
            rows=rows,
            ids=selection.ids[rows],
            species=species,
            owner=owner_of(offsets),
            natoms=torch.from_numpy(natoms),
            energies=torch.from_numpy(targets.energies[:, rows]),
            energy_mask=torch.from_numpy(targets.energy_mask[:, rows]),
            forces=torch.from_numpy(targets.forces[:, atoms]).to(self.torch_dtype) if self.forces else None,
            force_mask=force_mask if self.forces else None,
            aev=aev,
            jacobian=jacobian,
            structures=structures,
            stress=None if targets.stress is None else torch.from_numpy(targets.stress[:, rows]).to(self.torch_dtype),
            stress_mask=None if targets.stress_mask is None else torch.from_numpy(targets.stress_mask[:, rows]),
            cells=torch.from_numpy(selection.cells[rows]).to(self.torch_dtype) if self.stress else None,
        )

    def epoch_rows(self, subset: str) -> np.ndarray:
        """Selection rows of one epoch: training structures that carry the highest target appear
        ``high_level_repeats`` times (scarce expensive labels are seen as often as plentiful cheap ones)."""
        rows = self.data.rows[subset]
        if subset != "train" or self.high_level_repeats <= 1:
            return rows
        high = rows[self.data.targets.energy_mask[-1][rows]]
        return np.concatenate([rows, np.tile(high, self.high_level_repeats - 1)])

    def _loader(self, subset: str, shuffle: bool) -> DataLoader:
        rows = self.epoch_rows(subset)
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if not shuffle:  # evaluation: a disjoint share per rank, no padding (no structure counted twice)
            return DataLoader(rows[rank::world], batch_size=self.eval_batch_size, shuffle=False, collate_fn=self.collate)
        # Training: every rank needs the same number of batches (each step all-reduces gradients), so the
        # sampler pads the epoch to a multiple of the number of ranks with a few repeated structures.
        sampler = DistributedSampler(rows, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return DataLoader(rows, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int) -> Batch:
        return batch.to(device)
