"""The data of a training run: the selected structures, their targets and their train/val/test rows.

Read from the database once per process (every DDP rank reads the same split), before any model exists,
because the element list and the self atomic energies come from it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.exc import IntegrityError, OperationalError

from pykinml.data.targets import Targets, TargetSpec, build_targets
from pykinml.db.connection import display_url
from pykinml.db.query import Selection, select_structures
from pykinml.db.splits import create_split, split_counts
from pykinml.errors import PykinmlError
from pykinml.nn.sae import element_counts, fit_sae

SUBSETS = ("train", "val", "test")


@dataclass
class TrainingData:
    selection: Selection
    targets: Targets
    specs: list[TargetSpec]
    rows: dict[str, np.ndarray]  # subset -> positions in the selection
    source: dict  # where it came from (database URL without password, levels, names, split)

    def elements(self) -> list[str]:
        """Element symbols present, by atomic number."""
        from ase.data import chemical_symbols

        return [chemical_symbols[z] for z in np.unique(self.selection.numbers)]

    def fit_sae(self, atomic_numbers: Sequence[int]) -> np.ndarray:
        """Self atomic energies (T, n_elements) fitted to each target's training energies."""
        lookup = np.full(max(max(atomic_numbers), int(self.selection.numbers.max())) + 1, 0)
        lookup[list(atomic_numbers)] = np.arange(len(atomic_numbers))
        train = self.selection.subset(self.rows["train"])
        counts = element_counts(lookup[train.numbers], train.offsets, len(atomic_numbers))
        energies = self.targets.energies[:, self.rows["train"]]
        fitted = []
        for spec, energy in zip(self.specs, energies):
            if not np.isfinite(energy).any():
                raise PykinmlError(f"no training structure carries the target {spec.name}; check data.levels and the split")
            fitted.append(fit_sae(counts, energy))
        return np.stack(fitted)


def _check_names(selection: Selection, names: Sequence[str] | None, where: str) -> None:
    if not names:
        return
    present = set(selection.names.tolist())
    for name in names:
        if "%" not in name and name not in present:
            raise PykinmlError(f"data.names: no structure named {name!r} with these levels in {where}")


def _select(engine, levels: list[str], fidelity: str, names, split: str | None, forces: bool, stress: bool,
            where: str) -> Selection:
    if fidelity == "single":
        selection = select_structures(engine, levels=levels, names=names, split=split, forces=forces, stress=stress)
    else:
        selection = select_structures(engine, optional_levels=levels, names=names, split=split, forces=forces,
                                      stress=stress)
        labelled = np.any([selection.has_energy[level] for level in levels], axis=0)
        selection = selection.subset(np.nonzero(labelled)[0])
        if fidelity == "delta":
            both = np.all([selection.has_energy[level] for level in levels], axis=0)
            if not both.all():
                missing = selection.ids[~both]
                shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if missing.size > 10 else "")
                raise PykinmlError(
                    f"fidelity=delta needs both {levels[0]} and {levels[1]} on every structure, but "
                    f"{missing.size} structure(s) in {where} have only one (ids {shown}); restrict data.names "
                    "or use fidelity=multi"
                )
    return selection


def _create_split_once(engine, split: str, fractions: list[float], seed: int, levels: list[str], names) -> None:
    """Create ``split``; when several DDP processes start at once, one creates it and the others use it
    (the split depends only on the seed, so whichever process wins, every process reads the same one)."""
    try:
        create_split(engine, split, fractions=fractions, seed=seed, levels=levels, names=names)
        return
    except PykinmlError:
        if split in split_counts(engine):  # another process stored it between our look and our write
            return
        raise
    except (IntegrityError, OperationalError):
        deadline = time.monotonic() + 60.0  # another process holds the write: wait for its split to appear
        while time.monotonic() < deadline:
            if split in split_counts(engine):
                return
            time.sleep(0.2)
        raise


def load_training_data(
    engine,
    levels: Sequence[str],
    specs: list[TargetSpec],
    fidelity: str,
    names: Sequence[str] | None,
    split: str,
    split_fractions: Sequence[float],
    seed: int,
    forces: bool,
    stress: bool = False,
) -> TrainingData:
    """Select the structures for ``fidelity``, creating split ``split`` first if the database lacks it."""
    levels = list(levels)
    where = display_url(engine.url)
    names = list(names) if names is not None else None
    if split not in split_counts(engine):
        required = levels if fidelity != "multi" else levels[:1]
        _create_split_once(engine, split, list(split_fractions), seed, required, names)
    selection = _select(engine, levels, fidelity, names, split, forces, stress, where)
    if len(selection) == 0:
        raise PykinmlError(
            f"no structure in {where} has the levels {levels}"
            + (f" and a name in {names}" if names else "") + f" and belongs to split {split!r}"
        )
    _check_names(selection, names, where)
    rows = {subset: np.nonzero(selection.subsets == code)[0] for code, subset in enumerate(SUBSETS)}
    for subset in ("train", "val"):
        if rows[subset].size == 0:
            raise PykinmlError(f"split {split!r} has no {subset} structures among the {len(selection)} selected in {where}")
    targets = build_targets(selection, specs, forces, stress)
    # A level may lack forces (expensive energies often come alone); training on forces needs some.
    if forces and not targets.force_mask[:, rows["train"]].any():
        raise PykinmlError(
            f"model.forces=true but no training structure has forces at {levels} in {where}; "
            "train on energies with model.forces=false"
        )
    if stress and not targets.stress_mask[:, rows["train"]].any():
        raise PykinmlError(
            f"model.stress=true but no training structure has a stress label at {levels} in {where} "
            "(stress comes with periodic cells); train without it: model.stress=false"
        )
    source = {"db": where, "levels": levels, "names": names, "split": split}
    return TrainingData(selection, targets, specs, rows, source)
