"""The activation functions a network layer can use, by name (config: ``model.activations``)."""

from __future__ import annotations

import torch
from torch import nn

from pykinml.errors import PykinmlError
from pykinml.fast_math import EXP_FLOOR, decaying_exp


class Gaussian(nn.Module):
    """exp(−x²): the original PyKinML's default activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return decaying_exp(-x * x)


CELU_ALPHA = 0.1  # ANI's choice

ACTIVATIONS = {
    "gaussian": Gaussian,
    "celu": lambda: nn.CELU(alpha=CELU_ALPHA),
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def _known(name: str) -> str:
    """``name`` as a key of :data:`ACTIVATIONS`, or a one-line error naming the config option."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise PykinmlError(f"unknown activation {name!r} in model.activations; choose from {', '.join(ACTIVATIONS)}")
    return key


def activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    return ACTIVATIONS[_known(name)]()


def value_and_slope(name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation ``name`` at ``x`` and its derivative there, for networks differentiated by hand
    (:class:`pykinml.nn.stacked.StackedNetworks`); the same functions as the modules of :data:`ACTIVATIONS`."""
    key = _known(name)
    if key == "gaussian":
        value = decaying_exp(-x * x)
        return value, -2.0 * x * value
    if key == "celu":
        below = torch.exp(torch.clamp(x / CELU_ALPHA, min=EXP_FLOOR, max=0.0))
        return torch.where(x > 0, x, CELU_ALPHA * (below - 1.0)), torch.where(x > 0, torch.ones_like(x), below)
    if key == "softplus":  # nn.Softplus: beta 1, linear above threshold 20
        linear = x > 20.0
        return torch.nn.functional.softplus(x), torch.where(linear, torch.ones_like(x), torch.sigmoid(x))
    if key == "silu":
        sigmoid = torch.sigmoid(x)
        return x * sigmoid, sigmoid * (1.0 + x * (1.0 - sigmoid))
    if key == "tanh":
        value = torch.tanh(x)
        return value, 1.0 - value * value
    raise AssertionError(f"no derivative written for activation {key!r}")


def slope_and_curvature(name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation's first and second derivatives at ``x``: what differentiating a network's input gradient
    by hand needs (:class:`pykinml.nn.energy_gradient.NetworkAndGradient`, training on forces)."""
    key = _known(name)
    value, slope = value_and_slope(key, x)
    if key == "gaussian":
        return slope, (4.0 * x * x - 2.0) * value
    if key == "celu":
        return slope, torch.where(x > 0, torch.zeros_like(x), slope / CELU_ALPHA)
    if key == "softplus":
        return slope, torch.where(x > 20.0, torch.zeros_like(x), slope * (1.0 - slope))
    if key == "silu":
        sigmoid = torch.sigmoid(x)
        return slope, sigmoid * (1.0 - sigmoid) * (2.0 + x * (1.0 - 2.0 * sigmoid))
    if key == "tanh":
        return slope, -2.0 * value * slope
    raise AssertionError(f"no second derivative written for activation {key!r}")
