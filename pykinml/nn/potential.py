"""Potentials: energies of structures from per-atom features, for one level or a chain of levels.

The chained multi-fidelity model (one network per level and element): level 0 sees the AEV G_i; level l > 0
sees G_i with the previous level's atomic energy e_i^{l−1} appended, and predicts a correction, so
e_i^l = e_i^{l−1} + NN_l([G_i, e_i^{l−1}]) and E_l = Σ_i e_i^l + Σ_i SAE_l(Z_i). With one level it is the
plain ANI model; delta learning is a one-level model whose targets are E_high − E_low. The networks
learn the residual after the SAEs; the SAE sums are kept in float64 (totals are large, residuals small).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pykinml.nn.energy_gradient import ElementLayout, NetworkAndGradient
from pykinml.nn.networks import ElementNetworks, layer_activations


def structure_sums(values: Tensor, owner: Tensor, n_structures: int) -> Tensor:
    """Sum per-atom ``values`` (N,) into their structures (B,) by scatter-add."""
    return values.new_zeros(n_structures).index_add(0, owner, values)


class ChainedPotential(nn.Module):
    """Energies (n_levels, B) of B structures; one :class:`ElementNetworks` per level (see module docstring)."""

    def __init__(
        self,
        n_levels: int,
        n_elements: int,
        aev_length: int,
        neurons: Sequence[int],
        activations: str | Sequence[str] = "celu",
        bias: bool = True,
    ):
        super().__init__()
        self.levels = nn.ModuleList(
            ElementNetworks(n_elements, aev_length + (1 if level else 0), neurons, activations, bias)
            for level in range(n_levels)
        )
        self.register_buffer("sae", torch.zeros(n_levels, n_elements, dtype=torch.float64))
        self.activations = tuple(layer_activations(activations, len(neurons)))

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    def _apply(self, fn, recurse=True):
        """``.to()``, ``.float()``, ``.cuda()``: the SAEs move with the module but stay float64 (totals are large)."""
        super()._apply(fn, recurse)
        self.sae = self.sae.to(torch.float64)
        return self

    def atomic(self, aev: Tensor, species: Tensor) -> Tensor:
        """Network atomic energies (n_levels, N), without the SAEs."""
        energies: list[Tensor] = []
        for network in self.levels:
            if len(energies) == 0:
                energies.append(network(aev, species))
            else:
                previous = energies[-1]
                energies.append(previous + network(torch.cat([aev, previous[:, None]], dim=1), species))
        return torch.stack(energies)

    def forward(self, aev: Tensor, species: Tensor, owner: Tensor, n_structures: int) -> Tensor:
        """Network energies (n_levels, B) in eV, without the SAEs (add :meth:`sae_energies` for totals)."""
        return torch.stack([structure_sums(level, owner, n_structures) for level in self.atomic(aev, species).unbind(0)])

    def energies_and_gradients(self, aev: Tensor, species: Tensor, owner: Tensor, n_structures: int) -> tuple[Tensor, Tensor]:
        """Network energies (n_levels, B) as :meth:`forward` gives them, and ∂E_l/∂G (n_levels, N, D), the gradient
        the forces contract with the AEV Jacobian. Differentiable (once) with respect to the weights and the AEVs,
        by hand-written backward passes (:mod:`pykinml.nn.energy_gradient`), the cheap way to train on forces."""
        layout = ElementLayout(species, len(self.levels[0].networks))
        features = layout.stack(aev)
        energies: list[Tensor] = []
        gradients: list[Tensor] = []
        for level, network in enumerate(self.levels):
            weights, biases = network.stacked_parameters()
            if level == 0:
                out, grad = NetworkAndGradient.apply(features, self.activations, len(weights), *weights, *biases)
            else:  # e_l = e_{l−1} + NN_l([G, e_{l−1}]): ∂e_l/∂G = (1 + ∂NN_l/∂e_{l−1})·∂e_{l−1}/∂G + ∂NN_l/∂G
                previous, previous_grad = energies[-1], gradients[-1]
                correction, through = NetworkAndGradient.apply(
                    torch.cat([features, previous], dim=2), self.activations, len(weights), *weights, *biases)
                out = previous + correction
                grad = previous_grad * (1.0 + through[..., -1:]) + through[..., :-1]
            energies.append(out)
            gradients.append(grad)
        residual = torch.stack([structure_sums(layout.unstack(out).flatten(), owner, n_structures) for out in energies])
        return residual, torch.stack([layout.unstack(grad) for grad in gradients])

    def sae_energies(self, species: Tensor, owner: Tensor, n_structures: int) -> Tensor:
        """Σ_i SAE_l(Z_i) per level and structure (n_levels, B), in float64: totals are large, residuals small."""
        return torch.stack([structure_sums(level, owner, n_structures) for level in self.sae[:, species].unbind(0)])
