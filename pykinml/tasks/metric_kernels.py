"""numba loop of :class:`pykinml.tasks.metrics.ErrorMetrics` on CPU: one pass per group of errors, where torch
took about fifteen operations (each a few microseconds of dispatch) per group and training step."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, boundscheck=False)
def error_sums(prediction, target, mask, scale, out):  # pragma: no cover - compiled
    """out += (Σ|e|, Σe², count) of e = (prediction − target) / scale over the rows r where mask[r] holds (every
    component of those rows), in float64; prediction and target (R, C), scale (R,), or empty for 1."""
    scaled = scale.shape[0] > 0
    for r in range(prediction.shape[0]):
        if mask[r]:
            factor = 1.0 / np.float64(scale[r]) if scaled else 1.0
            for c in range(prediction.shape[1]):
                error = (np.float64(prediction[r, c]) - np.float64(target[r, c])) * factor
                out[0] += abs(error)
                out[1] += error * error
            out[2] += prediction.shape[1]
