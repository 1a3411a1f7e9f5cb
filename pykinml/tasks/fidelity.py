"""The three fidelity modes as thin subclasses of :class:`PotentialTask`: which targets, how many networks."""

from __future__ import annotations

from pykinml.data.targets import TargetSpec
from pykinml.errors import PykinmlError
from pykinml.tasks.base import PotentialTask


class SingleFidelityTask(PotentialTask):
    """One level: energies and forces of ``levels[0]``."""

    fidelity = "single"

    @classmethod
    def target_specs(cls, levels: list[str]) -> list[TargetSpec]:
        if len(levels) != 1:
            raise PykinmlError(f"fidelity=single trains on one level, but data.levels is {levels}; give one level")
        return [TargetSpec(levels[0], levels[0])]


class DeltaTask(PotentialTask):
    """Delta learning: the network predicts E_high − E_low (and F_high − F_low); at use, E_high = E_low + Δ."""

    fidelity = "delta"

    @classmethod
    def target_specs(cls, levels: list[str]) -> list[TargetSpec]:
        if len(levels) != 2:
            raise PykinmlError(f"fidelity=delta needs two levels (low, high) in data.levels, got {levels}")
        low, high = levels
        return [TargetSpec(f"{high}-{low}", high, minus=low)]


class MultiFidelityTask(PotentialTask):
    """Chained multi-fidelity: one network per level, low → high, each correcting the one below."""

    fidelity = "multi"

    @classmethod
    def target_specs(cls, levels: list[str]) -> list[TargetSpec]:
        if len(levels) < 2:
            raise PykinmlError(f"fidelity=multi needs two or more levels (low → high) in data.levels, got {levels}")
        return [TargetSpec(level, level) for level in levels]

    @staticmethod
    def network_levels(n_targets: int) -> int:
        return n_targets


FIDELITIES: dict[str, type[PotentialTask]] = {
    task.fidelity: task for task in (SingleFidelityTask, DeltaTask, MultiFidelityTask)
}


def task_class(fidelity: str) -> type[PotentialTask]:
    if fidelity not in FIDELITIES:
        raise PykinmlError(f"unknown fidelity {fidelity!r}; choose from {', '.join(FIDELITIES)}")
    return FIDELITIES[fidelity]
