"""numba loops of :mod:`pykinml.aev.gather_contract` on CPU arrays (C-contiguous; float32 or float64).

They release the GIL, run on one thread (a training process uses one core), and compile once per dtype into
numba's on-disk cache.
"""

from __future__ import annotations

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
