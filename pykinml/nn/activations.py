"""The activation functions a network layer can use, by name (config: ``model.activations``)."""

from __future__ import annotations

import torch
from torch import nn

from pykinml.errors import PykinmlError


class Gaussian(nn.Module):
    """exp(−x²): the original PyKinML's default activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-x * x)


ACTIVATIONS = {
    "gaussian": Gaussian,
    "celu": lambda: nn.CELU(alpha=0.1),  # ANI's choice of alpha
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise PykinmlError(f"unknown activation {name!r} in model.activations; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()
