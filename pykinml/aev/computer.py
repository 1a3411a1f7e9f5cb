"""The user-facing AEV API on ``ase.Atoms``: values and dense Jacobians through the same kernels as precompute."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from pykinml.aev.compute import compute
from pykinml.aev.jacobian import dense
from pykinml.aev.neighbors import Structures
from pykinml.aev.params import AEVParams
from pykinml.errors import PykinmlError


def pack(
    params: AEVParams,
    numbers: np.ndarray,
    positions: np.ndarray,
    offsets: np.ndarray,
    cells: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    ids: np.ndarray | None = None,
) -> Structures:
    """Ragged numpy structures (as ``select_structures`` returns them) → tensors for the AEV kernels.

    Raises a one-line error naming the structure (its database id when ``ids`` is given) and atom whose
    element is not in the AEV element list.
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    n_structures = len(offsets) - 1
    lookup = np.full(max(int(numbers.max(initial=0)), max(params.atomic_numbers)) + 1, -1, dtype=np.int64)
    lookup[list(params.atomic_numbers)] = np.arange(params.n_elements)
    species = lookup[numbers]
    if (species < 0).any():
        atom = int(np.argmax(species < 0))
        k = int(np.searchsorted(offsets, atom, side="right") - 1)
        which = f"structure id {int(ids[k])}" if ids is not None else f"structure {k}"
        raise PykinmlError(
            f"{which} atom {atom - int(offsets[k])} is {chemical_symbols[numbers[atom]]}, "
            f"which is not among the AEV elements {list(params.elements)}"
        )
    if cells is None:
        cells = np.zeros((n_structures, 3, 3))
    if pbc is None:
        pbc = np.zeros((n_structures, 3), dtype=bool)
    return Structures(
        species=torch.as_tensor(species, device=device),
        positions=torch.as_tensor(np.asarray(positions), dtype=dtype, device=device),
        offsets=torch.as_tensor(np.asarray(offsets, dtype=np.int64), device=device),
        cells=torch.as_tensor(np.asarray(cells), dtype=dtype, device=device),
        pbc=torch.as_tensor(np.asarray(pbc, dtype=bool), device=device),
    )


def pack_atoms(
    params: AEVParams, frames: Sequence[Atoms], dtype: torch.dtype = torch.float32, device="cpu"
) -> Structures:
    """A list of ``ase.Atoms`` → packed tensors (positions in Å, cells and pbc as given)."""
    counts = [len(a) for a in frames]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    numbers = np.concatenate([a.numbers for a in frames]) if frames else np.zeros(0, np.int64)
    positions = np.concatenate([a.positions for a in frames]) if frames else np.zeros((0, 3))
    cells = np.array([a.cell.array for a in frames]).reshape(-1, 3, 3)
    pbc = np.array([a.pbc for a in frames], dtype=bool).reshape(-1, 3)
    return pack(params, numbers, positions, offsets, cells, pbc, dtype, device)


class AEVComputer:
    """AEVs and their Jacobians for ``ase.Atoms``, with the original PyKinML definition by default.

    ``AEVComputer(["C", "H"])`` uses (n_rad, n_rho_ang, n_ang) = (16, 8, 8), cutoffs (5.2, 3.8) Å,
    β = 0.95, ζ = 8; ``AEVComputer.preset("ani2x")`` gives TorchANI's constants. Element order is the
    order given and fixes the AEV layout.
    """

    def __init__(
        self,
        elements: Sequence[str | int] | None = None,
        n_rad: int = 16,
        n_rho_ang: int = 8,
        n_ang: int = 8,
        cutoffs: tuple[float, float] = (5.2, 3.8),
        beta: float = 0.95,
        zeta: float = 8,
        *,
        params: AEVParams | None = None,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
    ):
        if params is None:
            if elements is None:
                raise PykinmlError("AEVComputer needs an element list (or params=, or AEVComputer.preset)")
            params = AEVParams.original(elements, n_rad, n_rho_ang, n_ang, cutoffs, beta, zeta)
        self.params = params
        self.dtype = torch_dtype(dtype)
        self.device = torch.device(device)

    @classmethod
    def preset(cls, name: str, elements: Sequence[str] | None = None, **kwargs) -> AEVComputer:
        """An AEVComputer with TorchANI's ``ani1x`` or ``ani2x`` constants."""
        return cls(params=AEVParams.preset(name, elements), **kwargs)

    @property
    def length(self) -> int:
        return self.params.length

    def aev(self, atoms: Atoms | Sequence[Atoms], dtype: torch.dtype | str | None = None):
        """AEVs (N, D) of one structure, or a list of them for a list of structures (one batched call)."""
        frames, single = _as_list(atoms)
        structures = pack_atoms(self.params, frames, torch_dtype(dtype or self.dtype), self.device)
        with torch.no_grad():
            values, _ = compute(self.params, structures)
        out = [values[a:b].cpu().numpy() for a, b in _bounds(structures)]
        return out[0] if single else out

    def jacobian(self, atoms: Atoms | Sequence[Atoms], dtype: torch.dtype | str | None = None):
        """Dense ∂G_i/∂x_j (N, D, N, 3) of one structure, or a list for a list of structures."""
        frames, single = _as_list(atoms)
        structures = pack_atoms(self.params, frames, torch_dtype(dtype or self.dtype), self.device)
        out = []
        with torch.no_grad():
            _, jac = compute(self.params, structures, jacobian=True)
            for a, b in _bounds(structures):
                out.append(dense(self.params, structures.species[a:b], jac.atoms(a, b)).cpu().numpy())
        return out[0] if single else out


def _as_list(atoms) -> tuple[list[Atoms], bool]:
    if isinstance(atoms, Atoms):
        return [atoms], True
    return list(atoms), False


def _bounds(structures: Structures) -> list[tuple[int, int]]:
    offsets = structures.offsets.tolist()
    return list(zip(offsets[:-1], offsets[1:]))


def torch_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch dtype from a torch dtype or its name (float32, float64); a one-line error otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "float64": torch.float64, "double": torch.float64, "float": torch.float32}
    if str(dtype) not in names:
        raise PykinmlError(f"unsupported AEV dtype {dtype!r}; use float32 or float64")
    return names[str(dtype)]
