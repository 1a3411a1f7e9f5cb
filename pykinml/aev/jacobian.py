"""The AEV Jacobian ∂G_i/∂x_j in a layout that grows with atoms × neighbours, and its contraction into forces.

Layout (per directed neighbour pair p = (i → j), j ≠ i or an image):
- radial pairs (r_ij ≤ radial cutoff): ``radial_dr`` (P_r, n_rad) = ∂G^R_{i, el(j), k}/∂r_ij and ``radial_unit``
  (P_r, 3) = (r_j − r_i)/r_ij, so ∂G^R_{i,el(j),:}/∂x_j = radial_dr ⊗ radial_unit (stored factored: exact and
  n_rad + 3 numbers instead of 3·n_rad);
- angular pairs (r_ij ≤ angular cutoff): ``angular`` (P_a, n_el, 3, A) = ∂G^A_{i, pair(el(j), e), :}/∂x_j for
  every element e (coordinate before AEV column), the only angular rows that x_j touches;
- the pair vectors, ``radial_distance`` (P_r,) r_ij and ``angular_vector`` (P_a, 3) r_j − r_i (the image's, in
  a periodic cell), for the virial: the AEV of atom i depends on its pair vectors alone, so ∂E/∂x_j through
  pair p is ∂E/∂r_p, and under a strain ε (r → r(1 + ε)) ∂E/∂ε = Σ_p r_p ⊗ ∂E/∂r_p.
The self block follows from translation invariance, ∂G_i/∂x_i = −Σ_j ∂G_i/∂x_j, so it is never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from pykinml.aev.force_contraction import atom_gradient
from pykinml.aev.gather_contract import gather_contract, use_kernels
from pykinml.aev.params import AEVParams


def pair_blocks(n_elements: int, device: torch.device | None = None) -> Tensor:
    """(n_el, n_el) index of the angular block of each element pair, upper-triangular order."""
    upper = torch.triu_indices(n_elements, n_elements, device=device)
    rows, columns = upper[0], upper[1]
    blocks = torch.arange(rows.numel(), device=device)
    index = torch.zeros((n_elements, n_elements), dtype=torch.int64, device=device)
    index[rows, columns] = blocks
    index[columns, rows] = blocks
    return index


@dataclass
class AEVJacobian:
    """Non-zero derivative rows of the AEVs of a batch of atoms (indices are atom indices of that batch)."""

    radial_center: Tensor  # (P_r,) int64
    radial_neighbor: Tensor  # (P_r,) int64
    radial_dr: Tensor  # (P_r, n_rad)
    radial_unit: Tensor  # (P_r, 3)
    radial_distance: Tensor  # (P_r,)
    angular_center: Tensor  # (P_a,) int64
    angular_neighbor: Tensor  # (P_a,) int64
    angular: Tensor  # (P_a, n_el, 3, A)
    angular_vector: Tensor  # (P_a, 3)

    def to(self, device=None, dtype: torch.dtype | None = None) -> AEVJacobian:
        """Move to ``device``; cast the floating arrays (not the indices) to ``dtype``."""
        moved = {}
        for f in fields(self):
            t = getattr(self, f.name)
            moved[f.name] = t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return AEVJacobian(**moved)

    def atoms(self, start: int, stop: int) -> AEVJacobian:
        """The rows of atoms start..stop-1 (one structure of the batch), re-indexed from 0."""
        r0, r1 = torch.searchsorted(self.radial_center, torch.tensor([start, stop], device=self.radial_center.device)).tolist()
        a0, a1 = torch.searchsorted(self.angular_center, torch.tensor([start, stop], device=self.angular_center.device)).tolist()
        return AEVJacobian(
            radial_center=self.radial_center[r0:r1] - start,
            radial_neighbor=self.radial_neighbor[r0:r1] - start,
            radial_dr=self.radial_dr[r0:r1],
            radial_unit=self.radial_unit[r0:r1],
            radial_distance=self.radial_distance[r0:r1],
            angular_center=self.angular_center[a0:a1] - start,
            angular_neighbor=self.angular_neighbor[a0:a1] - start,
            angular=self.angular[a0:a1],
            angular_vector=self.angular_vector[a0:a1],
        )


def pair_gradients(params: AEVParams, species: Tensor, dE_dG: Tensor, jacobian: AEVJacobian) -> tuple[Tensor, Tensor]:
    """∂E/∂r_p through each radial pair (P_r, 3) and each angular pair (P_a, 3), r_p = x_j − x_i, from ∂E/∂G
    (N, D); differentiable in ``dE_dG``. Forces and the virial are both sums of these."""
    n, n_el, n_rad = dE_dG.shape[0], params.n_elements, params.radial_length
    # Rows of ∂E/∂G are gathered with index_select on flattened blocks: its backward is a fast index_add
    # (advanced indexing would back-propagate through a much slower accumulating index_put).
    radial = dE_dG[:, : n_el * n_rad].reshape(n * n_el, n_rad)
    angular = dE_dG[:, n_el * n_rad :].reshape(n * params.n_pairs, params.angular_length)
    # Radial: (∂E/∂G_i · ∂G_i/∂r_ij) û_ij, for the block of j's element.
    i, j = jacobian.radial_center, jacobian.radial_neighbor
    along = (radial.index_select(0, i * n_el + species[j]) * jacobian.radial_dr).sum(dim=1)
    radial_part = along[:, None] * jacobian.radial_unit
    # Angular: the blocks pair(el(j), e) for every element e, each times its row of ∂E/∂G.
    ia, ja = jacobian.angular_center, jacobian.angular_neighbor
    blocks = pair_blocks(n_el, dE_dG.device)[species[ja]]  # (P_a, n_el)
    index = (ia[:, None] * params.n_pairs + blocks).flatten()
    angular_part = gather_contract(jacobian.angular.view(-1, 3, params.angular_length), angular, index)
    return radial_part, angular_part.view(-1, n_el, 3).sum(dim=1)


def dE_dx(params: AEVParams, species: Tensor, dE_dG: Tensor, jacobian: AEVJacobian,
          pairs: tuple[Tensor, Tensor] | None = None, kernels: bool | None = None) -> Tensor:
    """∂E/∂x (N, 3) from ∂E/∂G (N, D) by scatter-add over the stored pairs; differentiable in ``dE_dG``.
    ``pairs``: :func:`pair_gradients` when already taken. Without them, on CPU, one numba pass
    (:mod:`pykinml.aev.force_contraction`; ``kernels=False`` takes the torch operations instead)."""
    if pairs is None and use_kernels(dE_dG, kernels):
        return atom_gradient(dE_dG, species, jacobian, pair_blocks(params.n_elements, dE_dG.device), params.radial_length)
    radial_part, angular_part = pair_gradients(params, species, dE_dG, jacobian) if pairs is None else pairs
    i, j = jacobian.radial_center, jacobian.radial_neighbor
    ia, ja = jacobian.angular_center, jacobian.angular_neighbor
    out = dE_dG.new_zeros((dE_dG.shape[0], 3))
    out.index_add_(0, j, radial_part).index_add_(0, i, -radial_part)
    out.index_add_(0, ja, angular_part).index_add_(0, ia, -angular_part)
    return out


def forces(params: AEVParams, species: Tensor, dE_dG: Tensor, jacobian: AEVJacobian,
           pairs: tuple[Tensor, Tensor] | None = None, kernels: bool | None = None) -> Tensor:
    """Forces −∂E/∂x (N, 3) in eV/Å for a batch, from ∂E/∂G and the cached Jacobian rows."""
    return -dE_dx(params, species, dE_dG, jacobian, pairs, kernels)


def strain_derivative(jacobian: AEVJacobian, pairs: tuple[Tensor, Tensor], owner: Tensor, n_structures: int) -> Tensor:
    """∂E/∂ε (B, 3, 3) under a symmetric strain r → r(1 + ε) of every pair vector: Σ_p r_p ⊗ ∂E/∂r_p over the
    pairs of each structure, symmetrised (the convention of :mod:`pykinml.aev.strain`; divide by V for σ)."""
    radial_part, angular_part = pairs
    radial_vector = jacobian.radial_distance[:, None] * jacobian.radial_unit
    per_pair = [(radial_vector, radial_part, jacobian.radial_center), (jacobian.angular_vector, angular_part, jacobian.angular_center)]
    out = radial_part.new_zeros((n_structures, 9))
    for vector, gradient, center in per_pair:
        out = out.index_add(0, owner[center], (vector[:, :, None] * gradient[:, None, :]).reshape(-1, 9))
    out = out.view(n_structures, 3, 3)
    return 0.5 * (out + out.transpose(1, 2))


def dense(params: AEVParams, species: Tensor, jacobian: AEVJacobian) -> Tensor:
    """The full ∂G_i/∂x_j as an (N, D, N, 3) tensor (for inspection and tests; N² memory)."""
    n, n_el, n_rad, width = species.numel(), params.n_elements, params.radial_length, params.angular_length
    out = jacobian.radial_dr.new_zeros((n, params.length, n, 3))
    i, j = jacobian.radial_center, jacobian.radial_neighbor
    block = jacobian.radial_dr[:, :, None] * jacobian.radial_unit[:, None, :]  # (P_r, n_rad, 3)
    columns = species[j, None] * n_rad + torch.arange(n_rad, device=species.device)
    _scatter_pairs(out, i, j, columns, block)
    ia, ja = jacobian.angular_center, jacobian.angular_neighbor
    blocks = pair_blocks(n_el, species.device)[species[ja]]  # (P_a, n_el)
    columns = n_el * n_rad + blocks[:, :, None] * width + torch.arange(width, device=species.device)
    _scatter_pairs(out, ia, ja, columns.flatten(1), jacobian.angular.transpose(2, 3).flatten(1, 2))
    return out


def _scatter_pairs(out: Tensor, i: Tensor, j: Tensor, columns: Tensor, block: Tensor) -> None:
    """out[i, c, j] += block and out[i, c, i] -= block for each pair's columns c (duplicates accumulate)."""
    n, d = out.shape[0], out.shape[1]
    flat = out.view(n * d * n, 3)
    for atom, sign in ((j, 1.0), (i, -1.0)):
        index = (i[:, None] * d + columns) * n + atom[:, None]
        flat.index_add_(0, index.flatten(), sign * block.reshape(-1, 3))
