"""Copy ranges of rows out of the cache's memory-mapped arrays into one batch array: numba loops.

A batch's rows of each cached array are one contiguous range per structure. numpy's fancy indexing gathers
them row by row through an index array the size of the batch (4,100 angular rows for 50 C5H5); these loops
copy each range at once into an array allocated once for the batch, and shift structure-local pair indices
to batch atom indices while copying them (no index array, no int32 → int64 copy, no second pass).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, boundscheck=False)
def copy_ranges(source, starts, counts, out, position):  # pragma: no cover - compiled
    """out[position:] = source[starts[r]:starts[r] + counts[r]] for each range r in order (2-D arrays, rows
    copied whole)."""
    for r in range(starts.shape[0]):
        start, count = starts[r], counts[r]
        out[position:position + count] = source[start:start + count]
        position += count


@njit(cache=True, nogil=True, boundscheck=False)
def copy_pairs(pairs, starts, counts, shifts, out, position):  # pragma: no cover - compiled
    """As :func:`copy_ranges` for (P, 2) pair indices, each range's indices plus ``shifts[r]``."""
    for r in range(starts.shape[0]):
        start, count, shift = starts[r], counts[r], shifts[r]
        for k in range(count):
            out[position + k, 0] = pairs[start + k, 0] + shift
            out[position + k, 1] = pairs[start + k, 1] + shift
        position += count


def rows_2d(array: np.ndarray) -> np.ndarray:
    """A (rows, everything else) view of a C-contiguous array, the layout the loops copy."""
    return array.reshape(array.shape[0], -1)


def empty_rows(like: np.ndarray, rows: int) -> np.ndarray:
    """An uninitialised array of ``rows`` rows shaped and typed as ``like``'s rows."""
    return np.empty((rows,) + like.shape[1:], dtype=like.dtype)
