"""AEVs (and optionally their Jacobian rows) for a batch of structures: pairs → radial terms, triples → angular.

Everything is vectorised over the concatenated atoms of many structures; the only loop is over chunks of
triples, which bounds memory for large systems. The same code runs on CPU and CUDA, in float32 or float64,
and is differentiable, so forces can also come from autograd through the AEV.

The kernels take plain tensors and the :data:`~pykinml.aev.params.AEVConstants` of the AEV, so TorchScript
compiles them into exported models (:func:`aev_of_structures`); :func:`compute` is the eager API on
:class:`~pykinml.aev.params.AEVParams` and :class:`~pykinml.aev.neighbors.Structures` around them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pykinml.aev.jacobian import AEVJacobian, pair_blocks
from pykinml.aev.neighbors import Pairs, Structures, neighbor_pairs, neighbor_search, pairs_within
from pykinml.aev.params import AEVConstants, AEVParams
from pykinml.fast_math import decaying_exp, power

TRIPLE_CHUNK = 32768  # triples per vectorised step: bounds the (triples × A × 3) intermediates

#: the Jacobian rows :func:`aev_from_pairs` returns, in the order of :class:`AEVJacobian`'s fields
JacobianRows = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _constant(values: list[float], like: Tensor) -> Tensor:
    """``values`` as a tensor of ``like``'s dtype and device, exactly (float64 too)."""
    if torch.jit.is_scripting():  # TorchScript's torch.tensor(list[float]) rounds through float32
        return torch.stack([torch.full((), value, dtype=like.dtype, device=like.device) for value in values])
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def cutoff_and_slope(r: Tensor, cutoff: float) -> tuple[Tensor, Tensor]:
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
    if pairs is None:
        pairs = neighbor_pairs(structures, params.max_cutoff)
    aev, rows = aev_from_pairs(
        params.constants(), structures.species, pairs.center, pairs.neighbor, pairs.vectors, pairs.distances,
        jacobian, TRIPLE_CHUNK,
    )
    if rows is None:
        return aev, None
    return aev, AEVJacobian(*rows)


def aev_of_structures(
    constants: AEVConstants, species: Tensor, positions: Tensor, offsets: Tensor, cells: Tensor, pbc: Tensor
) -> Tensor:
    """AEVs (N, D) of packed structures (as :class:`Structures` holds them), differentiable in positions and cells."""
    cutoff = max(constants.radial_cutoff, constants.angular_cutoff)
    center, neighbor, vectors, distances, _ = neighbor_search(positions, offsets, cells, pbc, cutoff)
    aev, _ = aev_from_pairs(constants, species, center, neighbor, vectors, distances, False)
    return aev


def aev_from_pairs(
    constants: AEVConstants,
    species: Tensor,
    center: Tensor,
    neighbor: Tensor,
    vectors: Tensor,
    distances: Tensor,
    jacobian: bool,
    chunk: int = TRIPLE_CHUNK,
) -> tuple[Tensor, JacobianRows | None]:
    """AEVs (N, D) of the atoms ``species`` (N,) from their directed neighbour pairs (sorted by centre).

    With ``jacobian``, also the non-zero derivative rows, the fields of :class:`AEVJacobian` in order.
    Triples are processed ``chunk`` at a time.
    """
    c = constants
    device = vectors.device
    n, n_el = species.numel(), c.n_elements
    n_pairs = n_el * (n_el + 1) // 2
    width = len(c.angular_shifts) * len(c.angle_sections)
    r_center, r_neighbor, r_vectors, r_distances = pairs_within(distances, c.radial_cutoff, [center, neighbor, vectors, distances])
    radial, radial_rows = _radial(c, species, r_center, r_neighbor, r_vectors, r_distances, n, jacobian)
    a_center, a_neighbor, a_vectors, a_distances = pairs_within(distances, c.angular_cutoff, [center, neighbor, vectors, distances])
    angular = vectors.new_zeros((n * n_pairs, width))
    angular_rows = vectors.new_zeros((a_center.numel() * n_el if jacobian else 0, 3, width))
    first, second = _triples(a_center, n)
    blocks = pair_blocks(n_el, device)
    shifts = _constant(c.angular_shifts, vectors)
    sections = _constant(c.angle_sections, vectors)
    for start in range(0, first.numel(), chunk):
        p, q = first[start : start + chunk], second[start : start + chunk]
        i = a_center[p]
        ej, ek = species[a_neighbor[p]], species[a_neighbor[q]]
        terms, d_xj, d_xk = _angular_terms(c, a_vectors, a_distances, p, q, shifts, sections, jacobian)
        angular.index_add_(0, i * n_pairs + blocks[ej, ek], terms)
        if d_xj is not None and d_xk is not None:
            angular_rows.index_add_(0, p * n_el + ek, d_xj)
            angular_rows.index_add_(0, q * n_el + ej, d_xk)
    aev = torch.cat([radial.view(n, n_el * len(c.radial_shifts)), angular.view(n, n_pairs * width)], dim=1)
    if radial_rows is None:
        return aev, None
    radial_dr, radial_unit = radial_rows
    return aev, (r_center, r_neighbor, radial_dr, radial_unit, r_distances, a_center, a_neighbor,
                 angular_rows.view(-1, n_el, 3, width), a_vectors)


def _radial(
    c: AEVConstants, species: Tensor, center: Tensor, neighbor: Tensor, vectors: Tensor, distances: Tensor, n: int, jacobian: bool
) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """Radial AEV blocks (N·n_el, n_rad) and, with ``jacobian``, ∂/∂r_ij (P, n_rad) and û_ij (P, 3) per pair."""
    r = distances[:, None]
    shifts = _constant(c.radial_shifts, r)
    fc, dfc = cutoff_and_slope(r, c.radial_cutoff)
    gauss = c.radial_scale * decaying_exp(-c.radial_eta * (r - shifts) ** 2)
    out = r.new_zeros((n * c.n_elements, len(c.radial_shifts)))
    out.index_add_(0, center * c.n_elements + species[neighbor], gauss * fc)
    if not jacobian:
        return out, None
    d_r = gauss * (dfc - 2 * c.radial_eta * (r - shifts) * fc)
    unit = vectors / distances[:, None]
    return out, (d_r, unit)


def _angular_terms(
    c: AEVConstants,
    vectors: Tensor,
    distances: Tensor,
    p: Tensor,
    q: Tensor,
    shifts: Tensor,
    sections: Tensor,
    jacobian: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Angular terms (T, A) of the triples (i; j = neighbour of pair p, k = of pair q), and ∂/∂x_j, ∂/∂x_k."""
    r1, r2 = distances[p], distances[q]
    u1, u2 = vectors[p] / r1[:, None], vectors[q] / r2[:, None]
    cos = (u1 * u2).sum(dim=1)
    scaled = torch.clamp(c.beta * cos, -1.0, 1.0)
    theta = torch.acos(scaled)
    half = 0.5 + 0.5 * torch.cos(theta[:, None] - sections)  # (T, n_ang)
    half_pow = power(half, c.zeta - 1)
    angle = half_pow * half
    mean = 0.5 * (r1 + r2)
    radial = decaying_exp(-c.angular_eta * (mean[:, None] - shifts) ** 2)  # (T, n_rho)
    fc1, dfc1 = cutoff_and_slope(r1, c.angular_cutoff)
    fc2, dfc2 = cutoff_and_slope(r2, c.angular_cutoff)
    cut = c.angular_scale * fc1 * fc2
    terms = ((radial * cut[:, None])[:, :, None] * angle[:, None, :]).flatten(1)
    if not jacobian:
        return terms, None, None
    # Every derivative is a sum of two outer products: coordinate ⊗ (radial shift ⊗ angle section). The
    # A-wide factors are formed first (radial ⊗ y is shared by x_j and x_k), so the (T, 3, A) blocks are
    # written by broadcasts whose inner loop runs over A, not over n_ang (a fifth faster).
    d_radial = -c.angular_eta * (mean[:, None] - shifts) * radial  # ∂radial/∂r1 = ∂radial/∂r2
    scale = c.angular_scale
    x1 = d_radial * cut[:, None] + radial * (scale * dfc1 * fc2)[:, None]  # ∂T/∂r_ij = x1 ⊗ angle
    x2 = d_radial * cut[:, None] + radial * (scale * fc1 * dfc2)[:, None]  # ∂T/∂r_ik = x2 ⊗ angle
    room = 1.0 - scaled**2
    # The inner where keeps the unused branch finite (torch.finfo, a clamp to tiny, does not compile).
    d_theta = torch.where(room > 0, -c.beta / torch.sqrt(torch.where(room > 0, room, torch.ones_like(room))), torch.zeros_like(room))
    d_angle = -0.5 * c.zeta * half_pow * torch.sin(theta[:, None] - sections)
    y = d_angle * (cut * d_theta)[:, None]  # ∂T/∂cos∠jik = radial ⊗ y
    radial_y = _outer(radial, y)
    # ∂cos/∂x_j = (û_k − cos û_j)/r_ij, ∂cos/∂x_k = (û_j − cos û_k)/r_ik.
    w1 = (u2 - cos[:, None] * u1) / r1[:, None]
    w2 = (u1 - cos[:, None] * u2) / r2[:, None]
    return terms, _jacobian_block(u1, _outer(x1, angle), w1, radial_y), _jacobian_block(u2, _outer(x2, angle), w2, radial_y)


def _outer(a: Tensor, b: Tensor) -> Tensor:
    """(T, 1, A) row-wise outer products of (T, n_rho) and (T, n_ang), ρ outer."""
    return (a[:, :, None] * b[:, None, :]).view(a.shape[0], 1, -1)


def _jacobian_block(u: Tensor, x_angle: Tensor, w: Tensor, radial_y: Tensor) -> Tensor:
    """(T, 3, A) derivative of the triples' terms: u ⊗ (x ⊗ angle) + w ⊗ (radial ⊗ y)."""
    return torch.mul(u[:, :, None], x_angle).addcmul_(w[:, :, None], radial_y)
