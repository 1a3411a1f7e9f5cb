"""The on-disk AEV cache: where it lives, its key, its layout, and a memory-mapped reader that builds batches.

A cache directory ``<root>/aev/<key>/`` holds ``manifest.json`` (what was computed, from what), the per-atom
``species.npy`` and per-structure ``ids.npy``/``atom_offsets.npy`` of the whole selection, and one directory
per chunk of consecutive structures (``chunk-000000/``) with ragged arrays:

- ``aev.npy`` (atoms, D); with Jacobians also ``radial_pairs.npy`` (P_r, 2) int32 structure-local
  (centre, neighbour), ``radial_dr.npy`` (P_r, n_rad), ``radial_unit.npy`` (P_r, 3), ``radial_distance.npy``
  (P_r,), ``angular_pairs.npy``, ``angular.npy`` (P_a, n_el, 3, A), ``angular_vector.npy`` (P_a, 3), and
  ``radial_offsets.npy``/``angular_offsets.npy`` (structures + 1).

Every chunk is written under a temporary name and renamed when whole, and ``complete.json`` is written last,
so a reader never sees a partial chunk and an interrupted build resumes where it stopped. Files are not
fsynced (the cache is derived data and the flush cost as much as the compute); instead every chunk file's
size is checked against its .npy header before it is trusted, so a chunk that a machine crash left short is
found and built again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pykinml.aev.jacobian import AEVJacobian
from pykinml.aev.params import AEVParams
from pykinml.data.row_gather import copy_pairs, copy_ranges, empty_rows, rows_2d
from pykinml.db.query import ragged_rows
from pykinml.errors import PykinmlError

FORMAT_VERSION = 2  # 2: the pair vectors (radial_distance, angular_vector), for the virial
CHUNK_ARRAYS = ("aev",)
JACOBIAN_ARRAYS = (
    "radial_pairs",
    "radial_dr",
    "radial_unit",
    "radial_distance",
    "radial_offsets",
    "angular_pairs",
    "angular",
    "angular_vector",
    "angular_offsets",
)
# The per-row arrays a batch copies, by what indexes their rows (atoms, radial pairs, angular pairs).
ROW_ARRAYS = {"atoms": ("aev",), "radial": ("radial_dr", "radial_unit", "radial_distance"),
              "angular": ("angular", "angular_vector")}


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """The cache root: ``explicit``, else ``$PYKINML_CACHE_DIR``, else ``$XDG_CACHE_HOME/pykinml``, else ``~/.cache/pykinml``."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("PYKINML_CACHE_DIR"):
        return Path(os.environ["PYKINML_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pykinml"


def geometry_digest(ids, numbers, positions, offsets, cells, pbc) -> str:
    """BLAKE2b of the selection's structure ids and exact geometries: the cache's identity of its input."""
    digest = hashlib.blake2b(digest_size=16)
    for array, dtype in ((ids, "<i8"), (offsets, "<i8"), (numbers, "u1"), (positions, "<f8"), (cells, "<f8"), (pbc, "u1")):
        data = np.ascontiguousarray(np.asarray(array).astype(dtype, copy=False))
        digest.update(str(data.shape).encode())
        digest.update(data.tobytes())
    return digest.hexdigest()


def cache_key(params: AEVParams, dtype: str, jacobian: bool, geometry: str) -> str:
    """Key of a cache: geometry digest, every AEV constant and the element list, dtype, Jacobians, format."""
    text = json.dumps(
        {"format": FORMAT_VERSION, "aev": params.to_dict(), "dtype": dtype, "jacobian": jacobian, "geometry": geometry},
        sort_keys=True,
    )
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def chunk_name(index: int) -> str:
    return f"chunk-{index:06d}"


def chunk_arrays(jacobian: bool) -> tuple[str, ...]:
    """The array files of every chunk of a cache built with or without Jacobians."""
    return CHUNK_ARRAYS + (JACOBIAN_ARRAYS if jacobian else ())


def _npy_is_whole(path: Path) -> bool:
    """Whether ``path`` is a .npy file as long as its header says (a crash can leave a renamed file short)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
            data_start = handle.tell()
            size = os.fstat(handle.fileno()).st_size
    except (OSError, ValueError):
        return False
    return size == data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def cut_chunk_file(directory: Path, jacobian: bool) -> Path | None:
    """The first missing or cut-short array file of chunk ``directory``, or None when the chunk is whole."""
    for name in chunk_arrays(jacobian):
        path = directory / f"{name}.npy"
        if not _npy_is_whole(path):
            return path
    return None


def write_json(path: Path, values: dict) -> None:
    """Write JSON whole or not at all (temporary name in the same directory, then rename)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
    os.replace(temporary, path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PykinmlError(f"cannot read {path}: {exc}") from exc


def cache_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def list_caches(root: Path) -> list[dict]:
    """One summary per cache directory under ``root`` (complete or not)."""
    out = []
    for directory in sorted((root / "aev").glob("*")) if (root / "aev").is_dir() else []:
        manifest = directory / "manifest.json"
        if not manifest.is_file():
            continue
        values = read_json(manifest)
        out.append(
            {
                "key": directory.name,
                "path": str(directory),
                "complete": (directory / "complete.json").is_file(),
                "structures": values["n_structures"],
                "atoms": values["n_atoms"],
                "jacobian": values["jacobian"],
                "dtype": values["dtype"],
                "elements": values["aev"]["elements"],
                "source": values.get("source", {}),
                "bytes": cache_size(directory),
            }
        )
    return out


def clear_caches(root: Path, keys: list[str] | None = None, incomplete_only: bool = False) -> list[str]:
    """Delete the named caches (all when ``keys`` is None); returns the keys deleted."""
    removed = []
    for entry in list_caches(root):
        if keys is not None and entry["key"] not in keys:
            continue
        if incomplete_only and entry["complete"]:
            continue
        shutil.rmtree(entry["path"])
        removed.append(entry["key"])
    if keys is not None:
        unknown = sorted(set(keys) - set(removed) - {e["key"] for e in list_caches(root)})
        if unknown:
            raise PykinmlError(f"no cache {unknown[0]} under {root / 'aev'}")
    return removed


@dataclass
class CachedBatch:
    """Structures of a batch from the cache: AEVs, species and (optionally) Jacobian rows with batch indices."""

    indices: np.ndarray  # (B,) positions of the structures in the cache (sorted)
    ids: np.ndarray  # (B,) database structure ids
    species: torch.Tensor  # (N,) int64
    offsets: torch.Tensor  # (B + 1,) int64 atom offsets
    aev: torch.Tensor  # (N, D)
    jacobian: AEVJacobian | None


class AEVCache:
    """A complete cache directory, read through memory maps (every process shares the page cache)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "complete.json").is_file():
            raise PykinmlError(f"{self.path} is not a complete AEV cache (run the precompute stage)")
        self.manifest = read_json(self.path / "manifest.json")
        if self.manifest.get("format") != FORMAT_VERSION:
            raise PykinmlError(f"{self.path}: cache format {self.manifest.get('format')} is not {FORMAT_VERSION}")
        self.params = AEVParams.from_dict(self.manifest["aev"])
        self.has_jacobian = bool(self.manifest["jacobian"])
        self.ids = np.load(self.path / "ids.npy")
        self.atom_offsets = np.load(self.path / "atom_offsets.npy")
        self.species = np.load(self.path / "species.npy")
        self.chunk_bounds = np.asarray(self.manifest["chunks"], dtype=np.int64)  # (n_chunks, 2) structures
        self._chunks: dict[int, dict[str, np.ndarray]] = {}
        starts = self.chunk_bounds[:, 0]
        self._chunk_of = np.searchsorted(starts, np.arange(len(self.ids)), side="right") - 1

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def natoms(self) -> np.ndarray:
        return np.diff(self.atom_offsets)

    def _chunk(self, c: int) -> dict[str, np.ndarray]:
        if c not in self._chunks:
            directory = self.path / chunk_name(c)
            cut = cut_chunk_file(directory, self.has_jacobian)
            if cut is not None:
                raise PykinmlError(f"{cut} is missing or cut short; run the precompute again to rebuild that chunk")
            names = chunk_arrays(self.has_jacobian)
            # Plain ndarray views of the memory maps: indexing an np.memmap goes through its slow Python
            # __getitem__; the view reads the same mapped pages.
            self._chunks[c] = {name: np.asarray(np.load(directory / f"{name}.npy", mmap_mode="r")) for name in names}
        return self._chunks[c]

    def batch(self, indices, device: str | torch.device = "cpu", jacobian: bool | None = None) -> CachedBatch:
        """Gather structures ``indices`` (positions in the cache) into one batch; sorted by position."""
        indices = np.unique(np.asarray(indices, dtype=np.int64))
        if indices.size and (indices[0] < 0 or indices[-1] >= len(self)):
            raise PykinmlError(f"structure index out of range for a cache of {len(self)} structures")
        jacobian = self.has_jacobian if jacobian is None else jacobian
        if jacobian and not self.has_jacobian:
            raise PykinmlError(f"{self.path} holds AEVs only (built without Jacobians)")
        natoms = self.natoms[indices]
        batch_offsets = np.concatenate([[0], np.cumsum(natoms)]).astype(np.int64)
        # Each structure's rows of every array are one range in its chunk: plan the ranges, allocate each batch
        # array once, and copy the ranges into it (pykinml.data.row_gather).
        kinds = ("atoms", "radial", "angular") if jacobian else ("atoms",)
        plan = []
        chunk_of = self._chunk_of[indices]
        for c in np.unique(chunk_of):
            in_chunk = chunk_of == c
            local = indices[in_chunk] - self.chunk_bounds[c, 0]
            arrays = self._chunk(int(c))
            chunk_atoms = self.atom_offsets[indices[in_chunk]] - self.atom_offsets[self.chunk_bounds[c, 0]]
            ranges = {"atoms": (chunk_atoms, natoms[in_chunk])}
            for kind in kinds[1:]:
                offsets = arrays[f"{kind}_offsets"]
                starts = np.asarray(offsets[local], dtype=np.int64)
                ranges[kind] = (starts, np.asarray(offsets[local + 1], dtype=np.int64) - starts)
            plan.append((arrays, ranges, batch_offsets[:-1][in_chunk]))
        template = self._chunk(0)  # row shapes and dtypes (every chunk has the same)
        totals = {kind: sum(int(ranges[kind][1].sum()) for _, ranges, _ in plan) for kind in kinds}
        out = {name: empty_rows(template[name], totals[kind]) for kind in kinds for name in ROW_ARRAYS[kind]}
        out.update({f"{kind}_pairs": np.empty((totals[kind], 2), dtype=np.int64) for kind in kinds[1:]})
        positions = dict.fromkeys(kinds, 0)
        for arrays, ranges, shifts in plan:
            for kind, (starts, counts) in ranges.items():
                for name in ROW_ARRAYS[kind]:
                    copy_ranges(rows_2d(arrays[name]), starts, counts, rows_2d(out[name]), positions[kind])
                if kind != "atoms":
                    copy_pairs(arrays[f"{kind}_pairs"], starts, counts, shifts, out[f"{kind}_pairs"], positions[kind])
                positions[kind] += int(counts.sum())
        aev = out["aev"]
        species = self.species[ragged_rows(self.atom_offsets[indices], natoms)].astype(np.int64)
        jac = None
        if jacobian:
            joined = {name: torch.from_numpy(out[name]) for name in JACOBIAN_ARRAYS if name in out}
            jac = AEVJacobian(
                radial_center=joined["radial_pairs"][:, 0],
                radial_neighbor=joined["radial_pairs"][:, 1],
                radial_dr=joined["radial_dr"],
                radial_unit=joined["radial_unit"],
                radial_distance=joined["radial_distance"],
                angular_center=joined["angular_pairs"][:, 0],
                angular_neighbor=joined["angular_pairs"][:, 1],
                angular=joined["angular"],
                angular_vector=joined["angular_vector"],
            ).to(device)
        return CachedBatch(
            indices=indices,
            ids=self.ids[indices],
            species=torch.from_numpy(species).to(device),
            offsets=torch.from_numpy(batch_offsets).to(device),
            aev=torch.from_numpy(aev).to(device),
            jacobian=jac,
        )
