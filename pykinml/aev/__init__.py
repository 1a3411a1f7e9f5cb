"""ANI atomic environment vectors and their Jacobians, batched in torch."""

from pykinml.aev.compute import compute
from pykinml.aev.computer import AEVComputer, pack, pack_atoms
from pykinml.aev.jacobian import AEVJacobian, dense, forces
from pykinml.aev.neighbors import Pairs, Structures, neighbor_pairs
from pykinml.aev.params import PRESETS, AEVParams

__all__ = [
    "AEVComputer",
    "AEVJacobian",
    "AEVParams",
    "PRESETS",
    "Pairs",
    "Structures",
    "compute",
    "dense",
    "forces",
    "neighbor_pairs",
    "pack",
    "pack_atoms",
]
