"""Batched O(N) neighbour pairs for many structures at once, in torch (CPU or CUDA), periodic or not.

A cell list per structure: atoms are binned into cubes of the cutoff's size and only the 27 neighbouring
cubes are searched, all structures of a batch together (keyed by structure and cube), with no Python loop
over structures or atoms. Periodic structures first get ghost images of the atoms within one cutoff of
their cell, so the same open-boundary search finds every image pair; pairs carry their integer cell shift.

The search itself (:func:`neighbor_search`) takes and returns plain tensors so that TorchScript compiles it
into exported models; :class:`Structures` and :class:`Pairs` are the eager API around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pykinml.errors import PykinmlError


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
        return structure_of_atoms(self.offsets)


@dataclass
class Pairs:
    """Directed neighbour pairs (i → j), sorted by i then j then image; one entry per image of j."""

    center: Tensor  # (P,) int64 atom index i
    neighbor: Tensor  # (P,) int64 atom index j
    vectors: Tensor  # (P, 3) r_j + shift - r_i, Å
    distances: Tensor  # (P,)
    shifts: Tensor  # (P, 3) int64 cell shift of j's image (zeros for molecules)

    def within(self, cutoff: float) -> Pairs:
        return Pairs(*pairs_within(self.distances, cutoff, [self.center, self.neighbor, self.vectors, self.distances, self.shifts]))


def structure_of_atoms(offsets: Tensor) -> Tensor:
    """The structure index (N,) of every atom of packed structures delimited by ``offsets`` (S + 1,)."""
    counts = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(offsets.numel() - 1, device=counts.device), counts)


def pairs_within(distances: Tensor, cutoff: float, fields: list[Tensor]) -> list[Tensor]:
    """The rows of the pair arrays ``fields`` whose pair is no longer than ``cutoff`` (``distances``), order kept."""
    keep = distances <= cutoff
    return [field[keep] for field in fields]


def _ragged_arange(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For each k, the numbers 0..counts[k]-1, concatenated, and the k each one belongs to."""
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(owner.numel(), device=counts.device) - starts[owner], owner


def _wrap_and_ghosts(
    positions: Tensor, cells: Tensor, pbc: Tensor, structure: Tensor, cutoff: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Wrap periodic atoms into their cell and add ghost images within ``cutoff`` of it.

    Returns the points to search (wrapped real atoms first, then ghosts), each point's structure, its atom
    index, its image shift relative to the atom's original position, and the real atoms' wrap shifts.
    """
    dtype, device = positions.dtype, positions.device
    n = positions.shape[0]
    periodic_structure = pbc.any(dim=1)
    zero_shift = torch.zeros((n, 3), dtype=torch.int64, device=device)
    atom_index = torch.arange(n, device=device)
    if not bool(periodic_structure.any()):
        return positions, structure, atom_index, zero_shift
    volumes = torch.linalg.det(cells).abs()
    singular = periodic_structure & (volumes < 1e-8)
    if bool(singular.any()):
        k = int(torch.nonzero(singular)[0, 0])
        volume = float(volumes[k])
        if torch.jit.is_scripting():  # TorchScript compiles no format specification, not even in a dead branch
            raise PykinmlError(f"structure {k} is periodic but its cell is singular (volume {volume} Å³)")
        else:
            text = "{:.3g}".format(volume)  # noqa: UP032 - see above
            raise PykinmlError(f"structure {k} is periodic but its cell is singular (volume {text} Å³)")
    safe_cells = torch.where(periodic_structure[:, None, None], cells, torch.eye(3, dtype=dtype, device=device))
    inverse = torch.linalg.inv(safe_cells)
    pbc_atom = pbc[structure]
    fractional = torch.einsum("nc,ncd->nd", positions, inverse[structure])
    wrap = torch.where(pbc_atom, torch.floor(fractional), torch.zeros_like(fractional)).to(torch.int64)
    fractional = fractional - wrap
    wrapped = torch.einsum("nd,ndc->nc", fractional, safe_cells[structure])
    wrapped = torch.where(periodic_structure[structure, None], wrapped, positions)
    # Perpendicular width of the cell along each reciprocal direction: images up to ceil(cutoff/width).
    widths = volumes[:, None] / torch.linalg.vector_norm(torch.linalg.cross(safe_cells[:, [1, 2, 0]], safe_cells[:, [2, 0, 1]]), dim=2)
    reach = torch.where(pbc, torch.ceil(cutoff / widths), torch.zeros_like(widths)).to(torch.int64)
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
    ok &= (near_cell | ~pbc[structure[atom]]).all(dim=1)
    atom, image = atom[ok], image[ok]
    ghosts = wrapped[atom] + torch.einsum("nd,ndc->nc", image.to(dtype), safe_cells[structure[atom]])
    points = torch.cat([wrapped, ghosts])
    point_structure = torch.cat([structure, structure[atom]])
    point_atom = torch.cat([atom_index, atom])
    # Shift of each point relative to its atom's *original* position: image - wrap.
    point_shift = torch.cat([-wrap, image - wrap[atom]])
    return points, point_structure, point_atom, point_shift


def _cube_key(cube: Tensor, structure: Tensor, dims: Tensor, base: Tensor) -> Tensor:
    """A batch-wide key for cube ``cube`` (M, 3) of structure ``structure`` (M,): cubes numbered per structure."""
    d = dims[structure]
    return base[structure] + (cube[:, 0] * d[:, 1] + cube[:, 1]) * d[:, 2] + cube[:, 2]


def _all_pairs(positions: Tensor, offsets: Tensor, structure: Tensor, cutoff: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Every in-structure pair within ``cutoff`` by testing all of them: for small molecules this is fewer
    operations than binning into cubes (O(Σ n_k²) work, no sorting), and the result is the same."""
    counts = offsets[1:] - offsets[:-1]
    within, i = _ragged_arange(counts[structure])
    j = offsets[structure[i]] + within
    vectors = positions[j] - positions[i]
    distances = torch.linalg.vector_norm(vectors, dim=1)
    keep = (distances <= cutoff) & (j != i)
    i, j = i[keep], j[keep]
    return i, j, vectors[keep], distances[keep], torch.zeros((i.numel(), 3), dtype=torch.int64, device=i.device)


def neighbor_search(
    positions: Tensor, offsets: Tensor, cells: Tensor, pbc: Tensor, cutoff: float, all_pairs_up_to: int = 48
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """All directed pairs (i, j, image) within ``cutoff`` Å, i ≠ j or a non-zero image, in every structure.

    Structure k is atoms ``offsets[k]:offsets[k+1]`` of ``positions`` (N, 3), with cell ``cells[k]`` (rows
    are cell vectors) and periodic directions ``pbc[k]``. Returns the fields of :class:`Pairs`: centre i,
    neighbour j, vector r_j + shift·cell − r_i (from the given positions, so autograd sees the geometry),
    its length and the integer cell shift, sorted by i then j then image. Molecules of at most
    ``all_pairs_up_to`` atoms (no periodic structure in the batch) test all their pairs; others use cell lists.
    """
    device = positions.device
    structure = structure_of_atoms(offsets)
    if positions.shape[0] > 0 and not bool(pbc.any()) and int((offsets[1:] - offsets[:-1]).max()) <= all_pairs_up_to:
        return _all_pairs(positions, offsets, structure, cutoff)
    points, point_structure, point_atom, point_shift = _wrap_and_ghosts(positions, cells, pbc, structure, cutoff)
    n_real = positions.shape[0]
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    if n_real == 0:
        return empty, empty, points.new_zeros((0, 3)), points.new_zeros(0), empty.view(0, 3)
    n_structures = offsets.numel() - 1
    lower = torch.full((n_structures, 3), float("inf"), dtype=points.dtype, device=device)
    lower = lower.scatter_reduce(0, point_structure[:, None].expand(-1, 3), points, "amin")
    cube = torch.floor((points - lower[point_structure]) / cutoff).to(torch.int64)
    dims = torch.zeros((n_structures, 3), dtype=torch.int64, device=device)
    dims = dims.scatter_reduce(0, point_structure[:, None].expand(-1, 3), cube + 1, "amax")
    sizes = dims.prod(dim=1)
    base = torch.cumsum(sizes, 0) - sizes
    key = _cube_key(cube, point_structure, dims, base)
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    # Search the 27 cubes around each real atom (in itertools.product order: -1, 0, 1 per axis).
    steps = torch.arange(-1, 2, device=device)
    around = torch.cartesian_prod(steps, steps, steps)
    atom = torch.arange(n_real, device=device).repeat_interleave(around.shape[0])
    near = cube[atom] + around.repeat(n_real, 1)
    s = structure[atom]
    inside = ((near >= 0) & (near < dims[s])).all(dim=1)
    atom, near, s = atom[inside], near[inside], s[inside]
    near_key = _cube_key(near, s, dims, base)
    start = torch.searchsorted(sorted_key, near_key)
    stop = torch.searchsorted(sorted_key, near_key, right=True)
    within, owner = _ragged_arange(stop - start)
    i = atom[owner]
    point = order[start[owner] + within]
    distances = torch.linalg.vector_norm(points[point] - points[i], dim=1)
    keep = (distances <= cutoff) & (point != i)
    i, point = i[keep], point[keep]
    j = point_atom[point]
    shifts = point_shift[point] - point_shift[i]
    order = torch.argsort((i * n_real + j) * points.shape[0] + point)
    i, j, shifts = i[order], j[order], shifts[order]
    # Vectors from the original positions, r_j + shift·cell - r_i, so that autograd sees the true geometry.
    vectors = positions[j] - positions[i]
    if bool(shifts.any()):
        vectors = vectors + torch.einsum("pd,pdc->pc", shifts.to(vectors.dtype), cells[structure[i]])
    return i, j, vectors, torch.linalg.vector_norm(vectors, dim=1), shifts


def neighbor_pairs(structures: Structures, cutoff: float) -> Pairs:
    """All directed pairs (i, j, image) within ``cutoff`` Å, i ≠ j or a non-zero image, in every structure."""
    return Pairs(*neighbor_search(structures.positions, structures.offsets, structures.cells, structures.pbc, cutoff))
