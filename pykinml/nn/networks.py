"""Per-element feed-forward networks: atom i's energy is NN_{Z_i}(features_i) (ANI style)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pykinml.errors import PykinmlError
from pykinml.nn.activations import activation


def layer_activations(activations: str | Sequence[str], n_hidden: int) -> list[str]:
    """One activation name per hidden layer from ``model.activations`` (one name for all, or one each)."""
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
    for size, name in zip(neurons, layer_activations(activations, len(neurons))):
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

    def stacked_parameters(self) -> tuple[list[Tensor], list[Tensor]]:
        """Every element's weights per layer as (n_elements, out, in), biases as (n_elements, 1, out) (none
        without biases): the layout of the batched, hand-differentiated networks."""
        linears = [[layer for layer in network if isinstance(layer, nn.Linear)] for network in self.networks]
        weights = [torch.stack([layers[k].weight for layers in linears]) for k in range(len(linears[0]))]
        biases = [torch.stack([layers[k].bias for layers in linears])[:, None, :]
                  for k in range(len(linears[0])) if linears[0][k].bias is not None]
        return weights, biases

    def forward(self, features: Tensor, species: Tensor) -> Tensor:
        # Sort atoms by element once, run each network on its contiguous slice, and undo the sort; every
        # gather is an index_select, whose backward (index_add) is fast, also through double backward.
        order = torch.argsort(species, stable=True)
        counts: list[int] = torch.bincount(species, minlength=len(self.networks)).tolist()
        slices = torch.split(features.index_select(0, order), counts)
        outputs: list[Tensor] = []
        # Every network runs, also on an empty slice: under DDP each rank must give every parameter a
        # gradient (zero for an element absent from its batch), or the gradient all-reduce fails or hangs.
        for element, network in enumerate(self.networks):  # a loop TorchScript compiles (it unrolls it)
            outputs.append(network(slices[element]).flatten())
        energies = torch.cat(outputs)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return energies.index_select(0, inverse)
