"""Self atomic energies (SAE): per-element constants fitted by least squares to the training energies.

Subtracting Σ_i SAE(Z_i) leaves the networks the small, smooth part of the energy to learn. They are fitted
on the training split only, so nothing about the validation or test energies leaks into the model.
"""

from __future__ import annotations

import numpy as np

from pykinml.errors import PykinmlError


def element_counts(species: np.ndarray, offsets: np.ndarray, n_elements: int) -> np.ndarray:
    """(B, n_elements) number of atoms of each element in each structure."""
    owner = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    counts = np.zeros((offsets.size - 1, n_elements))
    np.add.at(counts, (owner, species), 1)
    return counts


def fit_sae(counts: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """SAEs (n_elements,) in eV minimising Σ_k (E_k − counts_k · SAE)², the minimum-norm solution.

    With few compositions the system is rank-deficient (one molecule: only the sum over its formula is
    determined); the minimum-norm solution is then one of the exact fits, and the networks learn the rest.
    Elements absent from the training structures get 0.
    """
    keep = np.isfinite(energies)
    if not keep.any():
        raise PykinmlError("cannot fit self atomic energies: no training structure carries this energy")
    solution, *_ = np.linalg.lstsq(counts[keep], energies[keep], rcond=None)
    return solution
