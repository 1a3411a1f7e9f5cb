"""A chained potential's networks for one molecule of fixed atoms: every element's network in one batched
matrix product per layer, differentiated by hand, so a call is a few dozen small operations and no graph.

What :class:`pykinml.molecule.MoleculePotential` (the ASE calculator's per-call path) runs on the AEVs;
batched prediction uses :class:`~pykinml.nn.potential.ChainedPotential` itself, whose weights these are
(tests check both agree, the gradient against autograd), and training on forces the same layer code through
:mod:`pykinml.nn.energy_gradient`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from pykinml.nn.energy_gradient import ElementLayout, forward_layers, input_gradient


class StackedNetworks:
    """Atomic energies (T, N) of a chained potential (T levels) and their gradients ∂E_l/∂G (T, N, D).

    ``state`` holds the potential's weights under ``levels.<l>.networks.<e>.<layer>.weight|bias`` (a
    :class:`ChainedPotential`'s state dict) for ``n_el`` elements, ``activations`` the name of each hidden
    layer's activation.
    Atoms are grouped by element and padded to the largest group: one bmm per layer serves every element.
    """

    def __init__(self, state: Mapping[str, Tensor], n_levels: int, n_el: int, activations: Sequence[str], species: Tensor):
        self.activations = list(activations)
        n_layers = len(self.activations) + 1
        self.weights: list[list[Tensor]] = []  # [level][layer] (n_el, out, in)
        self.biases: list[list[Tensor | None]] = []
        for level in range(n_levels):
            prefix = f"levels.{level}.networks."
            layers = [2 * k for k in range(n_layers)]  # Linear modules sit between activations in the Sequential
            self.weights.append([torch.stack([state[f"{prefix}{e}.{k}.weight"] for e in range(n_el)]) for k in layers])
            self.biases.append([
                torch.stack([state[f"{prefix}{e}.{k}.bias"] for e in range(n_el)])[:, None, :]
                if f"{prefix}0.{k}.bias" in state else None
                for k in layers
            ])
        species = species.to(device=self.weights[0][0].device, dtype=torch.int64)
        # index (n_el·width): the atoms of each element, padded with atom 0; mask is 1 on real atoms only.
        layout = ElementLayout(species, n_el)
        mask = torch.zeros(n_el * layout.width, dtype=self.weights[0][0].dtype, device=species.device)
        mask[layout.slot] = 1.0
        self.index, self.mask, self.n_atoms = layout.gather, mask.view(n_el, layout.width, 1), int(species.numel())

    def _network(self, level: int, inputs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs (n_el, B·width, 1) of one level's networks and ∂(Σ real atoms' outputs)/∂inputs."""
        out, _, _, slopes = forward_layers(inputs, self.weights[level], self.biases[level], self.activations)
        return out, input_gradient(self.weights[level], slopes, mask)[0]

    def __call__(self, aev: Tensor) -> tuple[Tensor, Tensor]:
        """Atomic network energies (T, B, N) (no SAEs) and ∂E_l/∂G_i (T, B, N, D) for B conformations' AEVs (B, N, D)."""
        n_el, width = self.mask.shape[0], self.mask.shape[1]
        b, d = aev.shape[0], aev.shape[2]
        # (n_el, B·width, D): each element's atoms of every conformation in one matrix per element.
        features = aev[:, self.index].view(b, n_el, width, d).transpose(0, 1).reshape(n_el, b * width, d)
        mask = self.mask.repeat(1, b, 1)
        energies: list[Tensor] = []
        gradients: list[Tensor] = []
        for level in range(len(self.weights)):
            if level == 0:
                out, grad = self._network(0, features, mask)
            else:
                # e_l = e_{l−1} + NN_l([G, e_{l−1}]): ∂e_l/∂G = (1 + ∂NN_l/∂e_{l−1})·∂e_{l−1}/∂G + ∂NN_l/∂G.
                previous, previous_grad = energies[-1], gradients[-1]
                correction, through = self._network(level, torch.cat([features, previous], dim=2), mask)
                out = previous + correction
                grad = previous_grad * (1.0 + through[..., -1:]) + through[..., :-1]
            energies.append(out)
            gradients.append(grad)
        n_levels = len(energies)
        atomic = aev.new_zeros((n_levels, b, self.n_atoms))
        d_aev = aev.new_zeros((n_levels, b, self.n_atoms, d))
        for level, (out, grad) in enumerate(zip(energies, gradients)):
            # back to (B, n_el·width) slots; padding slots (mask 0) add zeros to atom 0
            atomic[level].index_add_(1, self.index, (out * mask).view(n_el, b, width).transpose(0, 1).reshape(b, -1))
            d_aev[level].index_add_(1, self.index, (grad * mask).view(n_el, b, width, d).transpose(0, 1).reshape(b, -1, d))
        return atomic, d_aev
