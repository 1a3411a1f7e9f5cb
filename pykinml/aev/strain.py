"""Stress by autograd: a zero strain per structure applied to positions and cell, so (1/V)·∂E/∂ε is the stress.

One implementation for training (the stress loss) and prediction (``StandalonePotential``, also scripted):
x' = x (1 + ε_s), h' = h (1 + ε_s) with ε_s = (ε + εᵀ)/2, which gives σ = (1/V) ∂E/∂ε, ASE's convention
(tensile positive), equal to TensorAlloy's σ = (1/V)(−Fᵀ R + (∂E/∂h)ᵀ h) for the same energy.
"""

from __future__ import annotations

import torch
from torch import Tensor


def apply_strain(positions: Tensor, cells: Tensor, owner: Tensor, n_structures: int) -> tuple[Tensor, Tensor, Tensor]:
    """(strain (B, 3, 3) at zero, requiring grad; strained positions (N, 3); strained cells (B, 3, 3))."""
    strain = torch.zeros((n_structures, 3, 3), dtype=positions.dtype, device=positions.device).requires_grad_(True)
    symmetric = 0.5 * (strain + strain.transpose(1, 2))
    strained_positions = positions + torch.einsum("nc,ncd->nd", positions, symmetric[owner])
    strained_cells = cells + torch.bmm(cells, symmetric)
    return strain, strained_positions, strained_cells


def stress_from_strain_gradient(d_strain: Tensor, cells: Tensor) -> Tensor:
    """σ = (1/V) ∂E/∂ε (B, 3, 3) in eV/Å³ with V = |det h|. A molecule has no volume: its entry is ∂E/∂ε
    itself, finite so that masking it out keeps gradients finite; callers report it as missing."""
    volume = torch.linalg.det(cells).abs()
    volume = torch.where(volume > 0, volume, torch.ones_like(volume))
    return d_strain / volume[:, None, None]
