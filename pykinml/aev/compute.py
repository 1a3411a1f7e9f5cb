"""AEVs (and optionally their Jacobian rows) for a batch of structures: pairs → radial terms, triples → angular.

Everything is vectorised over the concatenated atoms of many structures; the only loop is over chunks of
triples, which bounds memory for large systems. The same code runs on CPU and CUDA, in float32 or float64,
and is differentiable, so forces can also come from autograd through the AEV.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pykinml.aev.jacobian import AEVJacobian, pair_blocks
from pykinml.aev.neighbors import Pairs, Structures, neighbor_pairs
from pykinml.aev.params import AEVParams

TRIPLE_CHUNK = 32768  # triples per vectorised step: bounds the (triples × A × 3) intermediates


def _cutoff(r: Tensor, cutoff: float) -> tuple[Tensor, Tensor]:
    """f_c(r) = ½cos(πr/R_c) + ½ inside the cutoff, 0 outside, and its derivative."""
    inside = r <= cutoff
    x = r * (math.pi / cutoff)
    value = torch.where(inside, 0.5 * torch.cos(x) + 0.5, torch.zeros_like(r))
    slope = torch.where(inside, -0.5 * (math.pi / cutoff) * torch.sin(x), torch.zeros_like(r))
    return value, slope


def _triples(center: Tensor, n_atoms: int) -> tuple[Tensor, Tensor]:
    """All unordered pairs (a, b), a < b, of angular pairs that share a centre (pairs sorted by centre)."""
    counts = torch.bincount(center, minlength=n_atoms)
    starts = torch.cumsum(counts, 0) - counts
    per_center = counts * (counts - 1) // 2
    owner = torch.repeat_interleave(torch.arange(n_atoms, device=center.device), per_center)
    k = torch.arange(owner.numel(), device=center.device) - (torch.cumsum(per_center, 0) - per_center)[owner]
    # k = b(b-1)/2 + a with 0 <= a < b: invert the triangular numbering (float guess, then exact fix).
    b = torch.floor((1 + torch.sqrt(1 + 8 * k.to(torch.float64))) / 2).to(torch.int64)
    b = b - (b * (b - 1) // 2 > k).to(torch.int64) + ((b + 1) * b // 2 <= k).to(torch.int64)
    a = k - b * (b - 1) // 2
    return starts[owner] + a, starts[owner] + b


def compute(
    params: AEVParams, structures: Structures, jacobian: bool = False, pairs: Pairs | None = None
) -> tuple[Tensor, AEVJacobian | None]:
    """AEVs (N, D) of the packed structures, and with ``jacobian`` their non-zero derivative rows."""
    positions = structures.positions
    dtype, device = positions.dtype, positions.device
    n, n_el = structures.n_atoms, params.n_elements
    species = structures.species
    if pairs is None:
        pairs = neighbor_pairs(structures, params.max_cutoff)
    radial, radial_jac = _radial(params, species, pairs.within(params.radial_cutoff), n, jacobian)
    angular_pairs = pairs.within(params.angular_cutoff)
    angular = positions.new_zeros((n * params.n_pairs, params.angular_length))
    angular_rows = None
    if jacobian:
        angular_rows = positions.new_zeros((angular_pairs.center.numel() * n_el, 3, params.angular_length))
    first, second = _triples(angular_pairs.center, n)
    blocks = pair_blocks(n_el, device)
    shifts = torch.tensor(params.angular_shifts, dtype=dtype, device=device)
    sections = torch.tensor(params.angle_sections, dtype=dtype, device=device)
    for start in range(0, first.numel(), TRIPLE_CHUNK):
        p, q = first[start : start + TRIPLE_CHUNK], second[start : start + TRIPLE_CHUNK]
        i = angular_pairs.center[p]
        ej, ek = species[angular_pairs.neighbor[p]], species[angular_pairs.neighbor[q]]
        terms, d_xj, d_xk = _angular_terms(params, angular_pairs, p, q, shifts, sections, jacobian)
        angular.index_add_(0, i * params.n_pairs + blocks[ej, ek], terms)
        if jacobian:
            angular_rows.index_add_(0, p * n_el + ek, d_xj)
            angular_rows.index_add_(0, q * n_el + ej, d_xk)
    aev = torch.cat([radial.view(n, n_el * params.radial_length), angular.view(n, params.n_pairs * params.angular_length)], dim=1)
    if not jacobian:
        return aev, None
    return aev, AEVJacobian(
        radial_center=radial_jac[0],
        radial_neighbor=radial_jac[1],
        radial_dr=radial_jac[2],
        radial_unit=radial_jac[3],
        angular_center=angular_pairs.center,
        angular_neighbor=angular_pairs.neighbor,
        angular=angular_rows.view(-1, n_el, 3, params.angular_length),
    )


def _radial(params: AEVParams, species: Tensor, pairs: Pairs, n: int, jacobian: bool):
    r = pairs.distances[:, None]
    shifts = torch.tensor(params.radial_shifts, dtype=r.dtype, device=r.device)
    fc, dfc = _cutoff(r, params.radial_cutoff)
    gauss = params.radial_scale * torch.exp(-params.radial_eta * (r - shifts) ** 2)
    out = r.new_zeros((n * params.n_elements, params.radial_length))
    out.index_add_(0, pairs.center * params.n_elements + species[pairs.neighbor], gauss * fc)
    if not jacobian:
        return out, None
    d_r = gauss * (dfc - 2 * params.radial_eta * (r - shifts) * fc)
    unit = pairs.vectors / pairs.distances[:, None]
    return out, (pairs.center, pairs.neighbor, d_r, unit)


def _angular_terms(params: AEVParams, pairs: Pairs, p: Tensor, q: Tensor, shifts, sections, jacobian: bool):
    """Angular terms (T, A) of the triples (i; j = neighbour of pair p, k = of pair q), and ∂/∂x_j, ∂/∂x_k."""
    r1, r2 = pairs.distances[p], pairs.distances[q]
    u1, u2 = pairs.vectors[p] / r1[:, None], pairs.vectors[q] / r2[:, None]
    cos = (u1 * u2).sum(dim=1)
    scaled = torch.clamp(params.beta * cos, -1.0, 1.0)
    theta = torch.acos(scaled)
    half = 0.5 + 0.5 * torch.cos(theta[:, None] - sections)  # (T, n_ang)
    half_pow = half ** (params.zeta - 1)
    angle = half_pow * half
    mean = 0.5 * (r1 + r2)
    radial = torch.exp(-params.angular_eta * (mean[:, None] - shifts) ** 2)  # (T, n_rho)
    fc1, dfc1 = _cutoff(r1, params.angular_cutoff)
    fc2, dfc2 = _cutoff(r2, params.angular_cutoff)
    cut = params.angular_scale * fc1 * fc2
    terms = ((radial * cut[:, None])[:, :, None] * angle[:, None, :]).flatten(1)
    if not jacobian:
        return terms, None, None
    # Every derivative is a sum of two outer products over (coordinate ⊗ radial shift) and angle section,
    # so each triple's (3, A) block is written in two passes from (T, 8)-sized factors.
    d_radial = -params.angular_eta * (mean[:, None] - shifts) * radial  # ∂radial/∂r1 = ∂radial/∂r2
    scale = params.angular_scale
    x1 = d_radial * cut[:, None] + radial * (scale * dfc1 * fc2)[:, None]  # ∂T/∂r_ij = x1 ⊗ angle
    x2 = d_radial * cut[:, None] + radial * (scale * fc1 * dfc2)[:, None]  # ∂T/∂r_ik = x2 ⊗ angle
    room = 1.0 - scaled**2
    tiny = torch.finfo(room.dtype).tiny
    d_theta = torch.where(room > 0, -params.beta / torch.sqrt(room.clamp(min=tiny)), torch.zeros_like(room))
    d_angle = -0.5 * params.zeta * half_pow * torch.sin(theta[:, None] - sections)
    y = d_angle * (cut * d_theta)[:, None]  # ∂T/∂cos∠jik = radial ⊗ y
    # ∂cos/∂x_j = (û_k − cos û_j)/r_ij, ∂cos/∂x_k = (û_j − cos û_k)/r_ik.
    w1 = (u2 - cos[:, None] * u1) / r1[:, None]
    w2 = (u1 - cos[:, None] * u2) / r2[:, None]
    n_rho, n_ang = radial.shape[1], angle.shape[1]

    def block(x: Tensor, u: Tensor, w: Tensor) -> Tensor:
        out = torch.empty((x.shape[0], 3 * n_rho, n_ang), dtype=x.dtype, device=x.device)
        torch.mul((u[:, :, None] * x[:, None, :]).view(-1, 3 * n_rho, 1), angle[:, None, :], out=out)
        out.addcmul_((w[:, :, None] * radial[:, None, :]).view(-1, 3 * n_rho, 1), y[:, None, :])
        return out.view(-1, 3, n_rho * n_ang)

    return terms, block(x1, u1, w1), block(x2, u2, w2)
