"""Networks: per-element MLPs (ANI style), self atomic energies, single-level and chained multi-level potentials."""

from pykinml.nn.activations import ACTIVATIONS, activation
from pykinml.nn.networks import ElementNetworks
from pykinml.nn.potential import ChainedPotential, structure_sums
from pykinml.nn.sae import element_counts, fit_sae

__all__ = [
    "ACTIVATIONS",
    "ChainedPotential",
    "ElementNetworks",
    "activation",
    "element_counts",
    "fit_sae",
    "structure_sums",
]
