"""LightningModules for the fidelity modes (single, delta, chained multi-fidelity) and their losses."""

from pykinml.tasks.base import PotentialTask
from pykinml.tasks.fidelity import FIDELITIES, DeltaTask, MultiFidelityTask, SingleFidelityTask, task_class

__all__ = ["FIDELITIES", "DeltaTask", "MultiFidelityTask", "PotentialTask", "SingleFidelityTask", "task_class"]
