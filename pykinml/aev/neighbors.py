"""Batched O(N) neighbour pairs for many structures at once, in torch (CPU or CUDA), periodic or not.

A cell list per structure: atoms are binned into cubes of the cutoff's size and only the 27 neighbouring
cubes are searched, all structures of a batch together (keyed by structure and cube), with no Python loop
over structures or atoms. Periodic structures first get ghost images of the atoms within one cutoff of
their cell, so the same open-boundary search finds every image pair; pairs carry their integer cell shift.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from pykinml.errors import PykinmlError

_NEIGHBOR_CUBES = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.int64)


@dataclass
class Structures:
    """Structures packed for the AEV: concatenated atoms, ``offsets`` delimit structure k's atoms."""

    species: Tensor  # (N,) int64: index of each atom's element in the AEV element list
    positions: Tensor  # (N, 3) float, Å
    offsets: Tensor  # (S + 1,) int64
    cells: Tensor  # (S, 3, 3) float, rows are cell vectors (zeros without a cell)
    pbc: Tensor  # (S, 3) bool

    @property
    def n_structures(self) -> int:
        return int(self.offsets.numel()) - 1

    @property
    def n_atoms(self) -> int:
        return int(self.species.numel())

    def structure_of_atom(self) -> Tensor:
        counts = self.offsets[1:] - self.offsets[:-1]
        return torch.repeat_interleave(torch.arange(self.n_structures, device=counts.device), counts)


@dataclass
class Pairs:
    """Directed neighbour pairs (i → j), sorted by i then j then image; one entry per image of j."""

    center: Tensor  # (P,) int64 atom index i
    neighbor: Tensor  # (P,) int64 atom index j
    vectors: Tensor  # (P, 3) r_j + shift - r_i, Å
    distances: Tensor  # (P,)
    shifts: Tensor  # (P, 3) int64 cell shift of j's image (zeros for molecules)

    def within(self, cutoff: float) -> Pairs:
        keep = self.distances <= cutoff
        return Pairs(*(t[keep] for t in (self.center, self.neighbor, self.vectors, self.distances, self.shifts)))


def _ragged_arange(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For each k, the numbers 0..counts[k]-1, concatenated, and the k each one belongs to."""
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(owner.numel(), device=counts.device) - starts[owner], owner


def _wrap_and_ghosts(structures: Structures, structure: Tensor, cutoff: float):
    """Wrap periodic atoms into their cell and add ghost images within ``cutoff`` of it.

    Returns the points to search (wrapped real atoms first, then ghosts), each point's structure, its atom
    index, its image shift relative to the atom's original position, and the real atoms' wrap shifts.
    """
    positions, dtype, device = structures.positions, structures.positions.dtype, structures.positions.device
    n = structures.n_atoms
    periodic_structure = structures.pbc.any(dim=1)
    zero_shift = torch.zeros((n, 3), dtype=torch.int64, device=device)
    atom_index = torch.arange(n, device=device)
    if not bool(periodic_structure.any()):
        return positions, structure, atom_index, zero_shift
    cells = structures.cells
    volumes = torch.linalg.det(cells).abs()
    singular = periodic_structure & (volumes < 1e-8)
    if bool(singular.any()):
        k = int(torch.nonzero(singular)[0])
        raise PykinmlError(f"structure {k} is periodic but its cell is singular (volume {float(volumes[k]):.3g} Å³)")
    safe_cells = torch.where(periodic_structure[:, None, None], cells, torch.eye(3, dtype=dtype, device=device))
    inverse = torch.linalg.inv(safe_cells)
    pbc_atom = structures.pbc[structure]
    fractional = torch.einsum("nc,ncd->nd", positions, inverse[structure])
    wrap = torch.where(pbc_atom, torch.floor(fractional), torch.zeros_like(fractional)).to(torch.int64)
    fractional = fractional - wrap
    wrapped = torch.einsum("nd,ndc->nc", fractional, safe_cells[structure])
    wrapped = torch.where(periodic_structure[structure, None], wrapped, positions)
    # Perpendicular width of the cell along each reciprocal direction: images up to ceil(cutoff/width).
    widths = volumes[:, None] / torch.linalg.cross(safe_cells[:, [1, 2, 0]], safe_cells[:, [2, 0, 1]]).norm(dim=2)
    reach = torch.where(structures.pbc, torch.ceil(cutoff / widths), torch.zeros_like(widths)).to(torch.int64)
    max_reach = int(reach.max())
    span = torch.arange(-max_reach, max_reach + 1, device=device)
    images = torch.cartesian_prod(span, span, span)
    images = images[(images != 0).any(dim=1)]
    # Candidate ghosts: every atom of a periodic structure times every image within its structure's reach.
    candidates = torch.nonzero(periodic_structure[structure]).squeeze(1)
    atom = candidates.repeat_interleave(images.shape[0])
    image = images.repeat(candidates.numel(), 1)
    ok = (image.abs() <= reach[structure[atom]]).all(dim=1)
    margin = (cutoff / widths)[structure[atom]]
    shifted = fractional[atom] + image.to(dtype)
    near_cell = (shifted >= -margin) & (shifted < 1 + margin)
    ok &= (near_cell | ~structures.pbc[structure[atom]]).all(dim=1)
    atom, image = atom[ok], image[ok]
    ghosts = wrapped[atom] + torch.einsum("nd,ndc->nc", image.to(dtype), safe_cells[structure[atom]])
    points = torch.cat([wrapped, ghosts])
    point_structure = torch.cat([structure, structure[atom]])
    point_atom = torch.cat([atom_index, atom])
    # Shift of each point relative to its atom's *original* position: image - wrap.
    point_shift = torch.cat([-wrap, image - wrap[atom]])
    return points, point_structure, point_atom, point_shift


def neighbor_pairs(structures: Structures, cutoff: float) -> Pairs:
    """All directed pairs (i, j, image) within ``cutoff`` Å, i ≠ j or a non-zero image, in every structure."""
    device = structures.positions.device
    structure = structures.structure_of_atom()
    points, point_structure, point_atom, point_shift = _wrap_and_ghosts(structures, structure, cutoff)
    n_real = structures.n_atoms
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    if n_real == 0:
        return Pairs(empty, empty, points.new_zeros((0, 3)), points.new_zeros(0), empty.view(0, 3))
    n_structures = structures.n_structures
    lower = torch.full((n_structures, 3), float("inf"), dtype=points.dtype, device=device)
    lower = lower.scatter_reduce(0, point_structure[:, None].expand(-1, 3), points, "amin")
    cube = torch.floor((points - lower[point_structure]) / cutoff).to(torch.int64)
    dims = torch.zeros((n_structures, 3), dtype=torch.int64, device=device)
    dims = dims.scatter_reduce(0, point_structure[:, None].expand(-1, 3), cube + 1, "amax")
    sizes = dims.prod(dim=1)
    base = torch.cumsum(sizes, 0) - sizes

    def cube_key(c: Tensor, s: Tensor) -> Tensor:
        d = dims[s]
        return base[s] + (c[:, 0] * d[:, 1] + c[:, 1]) * d[:, 2] + c[:, 2]

    key = cube_key(cube, point_structure)
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    # Search the 27 cubes around each real atom.
    offsets = _NEIGHBOR_CUBES.to(device)
    atom = torch.arange(n_real, device=device).repeat_interleave(offsets.shape[0])
    near = cube[atom] + offsets.repeat(n_real, 1)
    s = structure[atom]
    inside = ((near >= 0) & (near < dims[s])).all(dim=1)
    atom, near, s = atom[inside], near[inside], s[inside]
    near_key = cube_key(near, s)
    start = torch.searchsorted(sorted_key, near_key)
    stop = torch.searchsorted(sorted_key, near_key, right=True)
    within, owner = _ragged_arange(stop - start)
    i = atom[owner]
    point = order[start[owner] + within]
    distances = (points[point] - points[i]).norm(dim=1)
    keep = (distances <= cutoff) & (point != i)
    i, point = i[keep], point[keep]
    j = point_atom[point]
    shifts = point_shift[point] - point_shift[i]
    order = torch.argsort((i * n_real + j) * points.shape[0] + point)
    i, j, shifts = i[order], j[order], shifts[order]
    # Vectors from the original positions, r_j + shift·cell - r_i, so that autograd sees the true geometry.
    vectors = structures.positions[j] - structures.positions[i]
    if bool(shifts.any()):
        vectors = vectors + torch.einsum("pd,pdc->pc", shifts.to(vectors.dtype), structures.cells[structure[i]])
    return Pairs(i, j, vectors, vectors.norm(dim=1), shifts)
