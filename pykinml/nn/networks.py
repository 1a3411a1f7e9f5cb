"""Per-element feed-forward networks: atom i's energy is NN_{Z_i}(features_i) (ANI style)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pykinml.errors import PykinmlError
from pykinml.nn.activations import activation


def _layer_activations(activations: str | Sequence[str], n_hidden: int) -> list[str]:
    if isinstance(activations, str):
        return [activations] * n_hidden
    names = list(activations)
    if len(names) == 1:
        return names * n_hidden
    if len(names) != n_hidden:
        raise PykinmlError(
            f"model.activations has {len(names)} entries but model.neurons has {n_hidden} hidden layers; "
            "give one activation, or one per hidden layer"
        )
    return names


def mlp(input_size: int, neurons: Sequence[int], activations: str | Sequence[str], bias: bool) -> nn.Sequential:
    """input → hidden layers (each followed by its activation) → one linear output."""
    layers: list[nn.Module] = []
    width = input_size
    for size, name in zip(neurons, _layer_activations(activations, len(neurons))):
        layers += [nn.Linear(width, int(size), bias=bias), activation(name)]
        width = int(size)
    layers.append(nn.Linear(width, 1, bias=bias))
    return nn.Sequential(*layers)


class ElementNetworks(nn.Module):
    """One MLP per element; ``forward(features (N, F), species (N,)) -> atomic energies (N,)``."""

    def __init__(
        self,
        n_elements: int,
        input_size: int,
        neurons: Sequence[int],
        activations: str | Sequence[str] = "celu",
        bias: bool = True,
    ):
        super().__init__()
        self.input_size = input_size
        self.networks = nn.ModuleList(mlp(input_size, neurons, activations, bias) for _ in range(n_elements))

    def forward(self, features: Tensor, species: Tensor) -> Tensor:
        out = features.new_zeros(species.shape[0])
        for element, network in enumerate(self.networks):
            rows = torch.nonzero(species == element).flatten()
            if rows.numel():
                out = out.index_put((rows,), network(features.index_select(0, rows)).flatten())
        return out
