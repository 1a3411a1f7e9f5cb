"""Elementwise functions as fast as the CPU allows on the values the AEV and the networks produce.

float32 ``torch.exp`` leaves its vectorised path for arguments below about −87 (results in or under the
subnormal range) and then takes 10–50× longer per element; a radial Gaussian exp(−η(r − ρ)²) with η ≈ 21 Å⁻²
is that far down for most distant pairs. ``torch.pow`` with an exponent it has no special case for costs
about 30 multiplications per element, where ζ − 1 = 7 needs four.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: exp(−80) ≈ 1.8e−35: a floor far below anything an AEV term or an activation could add up to, and well
#: inside float32's normal range (smallest 1.2e−38)
EXP_FLOOR = -80.0


def decaying_exp(argument: Tensor, floor: float = EXP_FLOOR) -> Tensor:
    """exp(argument) with the argument floored at ``floor`` (its derivative there is 0)."""
    return torch.exp(torch.clamp(argument, min=floor))


def power(base: Tensor, exponent: float) -> Tensor:
    """base ** exponent; a whole exponent from 1 to 64 by repeated squaring (log₂ n products), else torch.pow."""
    whole = int(exponent)
    if float(whole) != exponent or whole < 1 or whole > 64:
        return torch.pow(base, exponent)
    result = base
    square = base
    started = False
    while whole > 0:
        if whole % 2 == 1:
            result = result * square if started else square
            started = True
        whole = whole // 2
        if whole > 0:
            square = square * square
    return result
