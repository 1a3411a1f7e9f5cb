"""Element networks' outputs and their input gradients in one pass, with the backward of both written by hand.

Training on forces needs ∂E/∂G (the forces are its contraction with the AEV Jacobian) and then the gradient
of a loss on ∂E/∂G with respect to the weights: a double backward. Through autograd that is a few hundred
small operations per step; here it is a handful of batched matrix products per layer, every element's
network in one ``bmm`` (atoms grouped by element and padded, the layout of
:class:`~pykinml.nn.stacked.StackedNetworks`). Checked against autograd's double backward in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pykinml.nn.activations import slope_and_curvature, value_and_slope


def forward_layers(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor | None],
                   activations: Sequence[str]) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
    """Outputs (E, W, 1) of stacked networks (weights (E, out, in), biases (E, 1, out) or None), with every
    layer's input, every hidden layer's pre-activation and its activation's slope (what the gradients need)."""
    inputs, pre, slopes = [], [], []
    for k, (weight, bias) in enumerate(zip(weights, biases)):
        inputs.append(x)
        x = torch.bmm(x, weight.transpose(1, 2)) if bias is None else torch.baddbmm(bias, x, weight.transpose(1, 2))
        if k < len(activations):
            pre.append(x)
            x, slope = value_and_slope(activations[k], x)
            slopes.append(slope)
    return x, inputs, pre, slopes


def input_gradient(weights: Sequence[Tensor], slopes: Sequence[Tensor], seed: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """∂(Σ seed·output)/∂input (E, W, in) back through the layers; also each layer's output gradient δ_k and,
    for hidden layers, the gradient u_k at their activations' outputs (the double backward reuses both)."""
    deltas: list[Tensor] = [seed]
    uppers: list[Tensor] = []
    grad = seed
    for k in range(len(weights) - 1, 0, -1):
        upper = torch.bmm(grad, weights[k])
        grad = upper * slopes[k - 1]
        uppers.insert(0, upper)
        deltas.insert(0, grad)
    return torch.bmm(grad, weights[0]), deltas, uppers


class NetworkAndGradient(torch.autograd.Function):
    """``(x (E, W, in), activations, n_layers, *weights (E, out, in), *biases (E, 1, out))`` ->
    ``(outputs (E, W, 1), ∂output/∂x (E, W, in))``.

    The backward takes the gradients of a loss with respect to both outputs and returns them with respect
    to x, every weight and every bias: the first derivative of the forward pass plus that of the input
    gradient (which needs the activations' second derivatives). It is not itself differentiable again.
    """

    @staticmethod
    def forward(ctx, x: Tensor, activations: tuple[str, ...], n_layers: int, *params: Tensor) -> tuple[Tensor, Tensor]:
        weights, biases = list(params[:n_layers]), list(params[n_layers:]) or [None] * n_layers
        out, inputs, pre, slopes = forward_layers(x, weights, biases, activations)
        grad, deltas, uppers = input_gradient(weights, slopes, torch.ones_like(out))
        ctx.activations, ctx.n_layers, ctx.has_bias = activations, n_layers, len(params) > n_layers
        ctx.save_for_backward(*weights, *inputs, *pre, *deltas, *uppers)
        ctx.set_materialize_grads(False)
        return out, grad

    @staticmethod
    def backward(ctx, out_bar: Tensor | None, grad_bar: Tensor | None):
        n = ctx.n_layers
        saved = ctx.saved_tensors
        weights, inputs = saved[:n], saved[n:2 * n]
        pre, deltas, uppers = saved[2 * n:3 * n - 1], saved[3 * n - 1:4 * n - 1], saved[4 * n - 1:]
        curves = [slope_and_curvature(name, z) for name, z in zip(ctx.activations, pre)]
        weight_bars: list[Tensor | None] = [None] * n
        pre_bars: list[Tensor | None] = [None] * (n - 1)

        def add(items: list, k: int, value: Tensor) -> None:
            items[k] = value if items[k] is None else items[k] + value

        if grad_bar is not None:  # back through the input gradient: g = δ_0 W_0ᵀ, δ_{k−1} = (δ_k W_kᵀ) ⊙ σ'(z_{k−1})
            add(weight_bars, 0, torch.bmm(deltas[0].transpose(1, 2), grad_bar))
            delta_bar = torch.bmm(grad_bar, weights[0].transpose(1, 2))
            for k in range(1, n):
                slope, curvature = curves[k - 1]
                add(pre_bars, k - 1, delta_bar * uppers[k - 1] * curvature)
                upper_bar = delta_bar * slope
                add(weight_bars, k, torch.bmm(deltas[k].transpose(1, 2), upper_bar))
                delta_bar = torch.bmm(upper_bar, weights[k].transpose(1, 2))  # δ_{n−1} is the constant seed: its bar is unused
        bias_bars: list[Tensor | None] = [None] * n
        x_bar = None
        z_bar = out_bar
        for k in range(n - 1, -1, -1):  # back through the forward pass
            if k < n - 1:
                hidden = pre_bars[k]
                z_bar = hidden if z_bar is None else (z_bar if hidden is None else z_bar + hidden)
            if z_bar is None:
                continue
            add(weight_bars, k, torch.bmm(z_bar.transpose(1, 2), inputs[k]))
            bias_bars[k] = z_bar.sum(1, keepdim=True)
            if k > 0:
                z_bar = torch.bmm(z_bar, weights[k]) * curves[k - 1][0]
            elif ctx.needs_input_grad[0]:
                x_bar = torch.bmm(z_bar, weights[0])
        weight_bars = [torch.zeros_like(w) if b is None else b for w, b in zip(weights, weight_bars)]
        bias_bars = [weights[k].new_zeros((weights[k].shape[0], 1, weights[k].shape[1])) if b is None else b
                     for k, b in enumerate(bias_bars)]
        return (x_bar, None, None, *weight_bars, *(bias_bars if ctx.has_bias else []))


class ElementLayout:
    """Atoms grouped by element and padded to the largest group: ``gather`` (E·W,) picks each slot's atom
    (padding slots repeat atom 0), ``slot`` (N,) each atom's slot. Padding slots' outputs are never read."""

    def __init__(self, species: Tensor, n_elements: int):
        counts = torch.bincount(species, minlength=n_elements)
        self.width = max(1, int(counts.max())) if species.numel() else 1
        order = torch.argsort(species, stable=True)
        ordered = species[order]
        rank = torch.arange(species.numel(), device=species.device) - (torch.cumsum(counts, 0) - counts)[ordered]
        self.slot = torch.empty_like(species)
        self.slot[order] = ordered * self.width + rank
        self.gather = torch.zeros(n_elements * self.width, dtype=species.dtype, device=species.device)
        self.gather[self.slot] = torch.arange(species.numel(), device=species.device)
        self.n_elements = n_elements

    def stack(self, values: Tensor) -> Tensor:
        """Per-atom rows (N, F) → (E, W, F)."""
        return values.index_select(0, self.gather).view(self.n_elements, self.width, -1)

    def unstack(self, values: Tensor) -> Tensor:
        """(E, W, F) → per-atom rows (N, F)."""
        return values.reshape(self.n_elements * self.width, -1).index_select(0, self.slot)
