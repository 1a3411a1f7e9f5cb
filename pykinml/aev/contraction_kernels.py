"""numba loops of :mod:`pykinml.aev.gather_contract` and :mod:`pykinml.aev.force_contraction` on CPU arrays
(floating arrays C-contiguous, float32 or float64; index arrays of any stride).

They release the GIL, run on one thread (a training process uses one core), and compile once per dtype into
numba's on-disk cache.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def contract(blocks, source, index, out):  # pragma: no cover - compiled
    """out[q, c] = Σ_a blocks[q, c, a] · source[index[q], a]."""
    n_blocks, width = blocks.shape[0], blocks.shape[2]
    for q in range(n_blocks):
        row = index[q]
        for c in range(3):
            total = blocks[q, c, 0] * source[row, 0]
            for a in range(1, width):
                total += blocks[q, c, a] * source[row, a]
            out[q, c] = total


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def scatter(blocks, grad, index, out):  # pragma: no cover - compiled
    """out[index[q], a] += Σ_c blocks[q, c, a] · grad[q, c]."""
    n_blocks, width = blocks.shape[0], blocks.shape[2]
    for q in range(n_blocks):
        row = index[q]
        g0, g1, g2 = grad[q, 0], grad[q, 1], grad[q, 2]
        for a in range(width):
            out[row, a] += blocks[q, 0, a] * g0 + blocks[q, 1, a] * g1 + blocks[q, 2, a] * g2


# Row slices and accumulators in the arrays' own dtype (a float64 literal would promote float32 sums) let numba
# vectorise the inner loops: 0.15 against 1.0 ms for the angular rows of a C5H5 batch when indexed element-wise.
@njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def atom_gradient(source, species, radial_center, radial_neighbor, radial_dr, radial_unit,
                  angular_center, angular_neighbor, angular, pair_block, n_rad, out):  # pragma: no cover - compiled
    """out[j] += ∂E/∂r_p, out[i] −= ∂E/∂r_p for every stored pair p = (i → j), ∂E/∂r_p from ∂E/∂G (``source``)."""
    n_el, width = angular.shape[1], angular.shape[3]
    zero = np.zeros(1, out.dtype)[0]
    for p in range(radial_center.shape[0]):
        i, j = radial_center[p], radial_neighbor[p]
        base = species[j] * n_rad
        row, dr = source[i, base:base + n_rad], radial_dr[p]
        along = zero
        for k in range(n_rad):
            along += row[k] * dr[k]
        for c in range(3):
            value = along * radial_unit[p, c]
            out[j, c] += value
            out[i, c] -= value
    start = n_el * n_rad
    for p in range(angular_center.shape[0]):
        i, j = angular_center[p], angular_neighbor[p]
        element = species[j]
        v0, v1, v2 = zero, zero, zero
        for e in range(n_el):
            base = start + pair_block[element, e] * width
            row, block = source[i, base:base + width], angular[p, e]
            for a in range(width):
                value = row[a]
                v0 += block[0, a] * value
                v1 += block[1, a] * value
                v2 += block[2, a] * value
        out[j, 0] += v0
        out[j, 1] += v1
        out[j, 2] += v2
        out[i, 0] -= v0
        out[i, 1] -= v1
        out[i, 2] -= v2


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def atom_gradient_transpose(grad, species, radial_center, radial_neighbor, radial_dr, radial_unit,
                            angular_center, angular_neighbor, angular, pair_block, n_rad, out):  # pragma: no cover - compiled
    """The transpose of :func:`atom_gradient`: ``out`` (N, D) += each pair's Jacobian rows times grad[j] − grad[i]."""
    n_el, width = angular.shape[1], angular.shape[3]
    for p in range(radial_center.shape[0]):
        i, j = radial_center[p], radial_neighbor[p]
        base = species[j] * n_rad
        along = ((grad[j, 0] - grad[i, 0]) * radial_unit[p, 0] + (grad[j, 1] - grad[i, 1]) * radial_unit[p, 1]
                 + (grad[j, 2] - grad[i, 2]) * radial_unit[p, 2])
        row, dr = out[i, base:base + n_rad], radial_dr[p]
        for k in range(n_rad):
            row[k] += along * dr[k]
    start = n_el * n_rad
    for p in range(angular_center.shape[0]):
        i, j = angular_center[p], angular_neighbor[p]
        element = species[j]
        w0, w1, w2 = grad[j, 0] - grad[i, 0], grad[j, 1] - grad[i, 1], grad[j, 2] - grad[i, 2]
        for e in range(n_el):
            base = start + pair_block[element, e] * width
            row, block = out[i, base:base + width], angular[p, e]
            for a in range(width):
                row[a] += block[0, a] * w0 + block[1, a] * w1 + block[2, a] * w2
