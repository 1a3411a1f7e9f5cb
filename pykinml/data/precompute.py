"""The precompute stage: a database selection → AEVs (and Jacobian rows) in a content-addressed cache, once.

Structures are cut into chunks of consecutive structures (about ``chunk_atoms`` atoms each); every chunk is
computed in batches through the same kernels as ``AEVComputer``, written under a temporary name and renamed
when whole. A killed run resumes at the first missing chunk and ends byte-identical to an uninterrupted one;
a run whose cache is complete does no work at all.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pykinml.aev.compute import compute
from pykinml.aev.computer import pack, torch_dtype
from pykinml.aev.params import AEVParams
from pykinml.allocator import keep_freed_memory
from pykinml.data.cache import (
    FORMAT_VERSION,
    AEVCache,
    cache_key,
    cache_root,
    chunk_name,
    cut_chunk_file,
    geometry_digest,
    read_json,
    write_json,
)
from pykinml.db.query import Selection
from pykinml.errors import PykinmlError

DEFAULT_CHUNK_ATOMS = 50_000  # atoms per chunk file set: resume granularity and write size
DEFAULT_BATCH_ATOMS = 4_096  # atoms per compute batch inside a chunk: bounds memory


def plan_chunks(natoms: np.ndarray, chunk_atoms: int) -> list[list[int]]:
    """[start, stop) structure ranges of about ``chunk_atoms`` atoms each (a larger structure stands alone)."""
    bounds, start, atoms = [], 0, 0
    for k, n in enumerate(natoms.tolist()):
        if atoms and atoms + n > chunk_atoms:
            bounds.append([start, k])
            start, atoms = k, 0
        atoms += n
    if start < len(natoms) or not bounds:
        bounds.append([start, len(natoms)])
    return bounds


def check_elements(params: AEVParams, selection: Selection) -> None:
    """Fail before writing anything if an atom's element is not among the AEV elements."""
    present = np.unique(selection.numbers)
    missing = sorted(set(present.tolist()) - set(params.atomic_numbers))
    if missing:
        atom = int(np.argmax(np.isin(selection.numbers, missing)))
        k = int(np.searchsorted(selection.offsets, atom, side="right") - 1)
        from ase.data import chemical_symbols

        raise PykinmlError(
            f"structure id {int(selection.ids[k])} contains {chemical_symbols[int(selection.numbers[atom])]}, "
            f"which is not among the AEV elements {list(params.elements)}"
        )


def _stale_temporaries(directory: Path) -> None:
    """Remove temporary chunk directories left by builders that are no longer running."""
    for temporary in directory.glob(".chunk-*.tmp"):
        pid = int(temporary.name.split(".")[2])
        try:
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(temporary, ignore_errors=True)


def _remove_cut_chunks(directory: Path, n_chunks: int, jacobian: bool) -> list[int]:
    """Delete chunk directories with a missing or short file (a machine crash before the page cache reached
    the disk) and ``complete.json`` with them; returns the chunks that still need computing."""
    todo = []
    for c in range(n_chunks):
        path = directory / chunk_name(c)
        if not path.is_dir():
            todo.append(c)
        elif (cut := cut_chunk_file(path, jacobian)) is not None:
            print(f"pykinml: {cut} is cut short; building chunk {c} again", file=sys.stderr)
            shutil.rmtree(path)
            (directory / "complete.json").unlink(missing_ok=True)
            todo.append(c)
    return todo


def _create_directory(directory: Path, manifest: dict, selection: Selection, params: AEVParams) -> None:
    """Create the cache directory with its manifest and per-structure arrays, atomically."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    lookup = np.zeros(max(params.atomic_numbers) + 1, np.int8)
    lookup[list(params.atomic_numbers)] = np.arange(params.n_elements)
    np.save(temporary / "ids.npy", selection.ids.astype(np.int64))
    np.save(temporary / "atom_offsets.npy", selection.offsets.astype(np.int64))
    np.save(temporary / "species.npy", lookup[selection.numbers])
    write_json(temporary / "manifest.json", manifest)
    try:
        os.rename(temporary, directory)
    except OSError:  # another process created it first: use theirs
        shutil.rmtree(temporary, ignore_errors=True)


def _compute_chunk(
    params: AEVParams, selection: Selection, start: int, stop: int, dtype, jacobian: bool, batch_atoms: int, device
) -> dict[str, list[np.ndarray]]:
    """AEVs and Jacobian rows of structures start..stop-1, as the chunk's arrays (structure-local indices).

    Each array comes as its per-batch parts: they are written one after another into one file, never
    concatenated in memory (a copy of the whole chunk costs more than computing it).
    """
    out: dict[str, list] = {}
    natoms = np.diff(selection.offsets)
    batches = plan_chunks(natoms[start:stop], batch_atoms)
    ends = {"radial": 0, "angular": 0}
    pair_offsets = {kind: [np.zeros(1, np.int64)] for kind in ends}
    for b0, b1 in batches:
        k0, k1 = start + b0, start + b1
        a0, a1 = int(selection.offsets[k0]), int(selection.offsets[k1])
        structures = pack(
            params,
            selection.numbers[a0:a1],
            selection.positions[a0:a1],
            selection.offsets[k0 : k1 + 1] - a0,
            selection.cells[k0:k1],
            selection.pbc[k0:k1],
            dtype=dtype,
            device=device,
            ids=selection.ids[k0:k1],
        )
        with torch.no_grad():
            aev, jac = compute(params, structures, jacobian=jacobian)
        out.setdefault("aev", []).append(aev.cpu().numpy())
        if not jacobian:
            continue
        offsets = structures.offsets
        for kind, center, neighbor, values in (
            ("radial", jac.radial_center, jac.radial_neighbor,
             {"radial_dr": jac.radial_dr, "radial_unit": jac.radial_unit, "radial_distance": jac.radial_distance}),
            ("angular", jac.angular_center, jac.angular_neighbor, {"angular": jac.angular, "angular_vector": jac.angular_vector}),
        ):
            owner = torch.searchsorted(offsets, center, right=True) - 1
            first = offsets[owner]
            pairs = torch.stack([center - first, neighbor - first], dim=1).to(torch.int32)
            out.setdefault(f"{kind}_pairs", []).append(pairs.cpu().numpy())
            for name, value in values.items():
                out.setdefault(name, []).append(value.cpu().numpy())
            counts = torch.bincount(owner, minlength=k1 - k0).cpu().numpy()
            pair_offsets[kind].append(ends[kind] + np.cumsum(counts))
            ends[kind] = int(pair_offsets[kind][-1][-1])
    if jacobian:
        for kind, parts in pair_offsets.items():
            out[f"{kind}_offsets"] = [np.concatenate(parts).astype(np.int64)]
    return out


def _save_parts(handle, parts: list[np.ndarray]) -> None:
    """Write the concatenation of ``parts`` (same dtype and trailing shape) as one .npy file, part by part."""
    first = parts[0]
    shape = (sum(len(part) for part in parts), *first.shape[1:])
    header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(handle, header)
    for part in parts:
        handle.write(np.ascontiguousarray(part, dtype=first.dtype).data)


def _write_chunk(directory: Path, index: int, arrays: dict[str, list[np.ndarray]]) -> None:
    """Write one chunk's arrays under a temporary name, then rename it into place (no fsync: see cache.py)."""
    temporary = directory / f".{chunk_name(index)}.{os.getpid()}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    for name in sorted(arrays):
        with open(temporary / f"{name}.npy", "wb") as handle:
            _save_parts(handle, arrays[name])
    try:
        os.rename(temporary, directory / chunk_name(index))
    except OSError:  # written meanwhile by another builder: identical content
        shutil.rmtree(temporary, ignore_errors=True)


def _chunk_job(directory: Path, c: int, params: dict, part: Selection, dtype: str, jacobian: bool, batch_atoms: int) -> int:
    """One chunk in a worker process: compute with one thread, write atomically; returns its structures."""
    torch.set_num_threads(1)
    arrays = _compute_chunk(AEVParams.from_dict(params), part, 0, len(part), torch_dtype(dtype), jacobian, batch_atoms, "cpu")
    _write_chunk(directory, c, arrays)
    return len(part)


def _run_in_workers(workers, directory, todo, chunks, params, selection, dtype, jacobian, batch_atoms, bar) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        jobs = [
            pool.submit(_chunk_job, directory, c, params.to_dict(), selection.geometry_slice(*chunks[c]), dtype, jacobian, batch_atoms)
            for c in todo
        ]
        for job in as_completed(jobs):
            bar.update(job.result())


def precompute(
    selection: Selection,
    params: AEVParams,
    *,
    dtype: str | torch.dtype = "float32",
    jacobian: bool = True,
    cache_dir: str | os.PathLike | None = None,
    source: dict | None = None,
    chunk_atoms: int = DEFAULT_CHUNK_ATOMS,
    batch_atoms: int = DEFAULT_BATCH_ATOMS,
    device: str | torch.device = "cpu",
    progress: bool = True,
    workers: int = 1,
) -> AEVCache:
    """Compute (or find) the cache of ``selection``'s AEVs, with Jacobian rows when ``jacobian``.

    ``workers`` > 1 computes chunks in that many single-threaded processes (CPU only; on 2 cores two
    processes beat two torch threads in one). The cache is byte-identical whatever the number of workers.

    ``source`` (database URL without password, levels, names, split) is recorded in the manifest for people;
    the key depends only on the structures' ids and geometries, the AEV constants, dtype and ``jacobian``.
    """
    if len(selection) == 0:
        raise PykinmlError("the selection has no structures: nothing to precompute")
    keep_freed_memory()  # the kernels allocate the same multi-MiB blocks per batch: reuse their pages
    compute_dtype = torch_dtype(dtype)
    dtype_name = "float64" if compute_dtype == torch.float64 else "float32"
    check_elements(params, selection)
    geometry = geometry_digest(
        selection.ids, selection.numbers, selection.positions, selection.offsets, selection.cells, selection.pbc
    )
    key = cache_key(params, dtype_name, jacobian, geometry)
    directory = cache_root(cache_dir) / "aev" / key
    if (directory / "complete.json").is_file() and not _remove_cut_chunks(
        directory, len(read_json(directory / "manifest.json")["chunks"]), jacobian
    ):
        cache = AEVCache(directory)
        if cache.params != params or cache.manifest.get("dtype") != dtype_name or cache.has_jacobian != jacobian:
            raise PykinmlError(
                f"AEV cache {directory} was built with other AEV parameters than its key says; "
                f"remove it with: pykinml-cache clear {key}"
            )
        return cache
    manifest = {
        "format": FORMAT_VERSION,
        "key": key,
        "geometry": geometry,
        "aev": params.to_dict(),
        "dtype": dtype_name,
        "jacobian": jacobian,
        "n_structures": len(selection),
        "n_atoms": int(selection.offsets[-1]),
        "chunks": plan_chunks(np.diff(selection.offsets), chunk_atoms),
        "source": source or {},
    }
    if not (directory / "manifest.json").is_file():
        _create_directory(directory, manifest, selection, params)
    chunks = read_json(directory / "manifest.json")["chunks"]  # an interrupted build's plan wins
    _stale_temporaries(directory)
    todo = _remove_cut_chunks(directory, len(chunks), jacobian)
    done_structures = len(selection) - sum(chunks[c][1] - chunks[c][0] for c in todo)
    bar = tqdm(
        total=len(selection),
        initial=done_structures,
        unit="structure",
        desc=f"AEV{'+Jacobian' if jacobian else ''} cache {key[:8]}",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    with bar:
        if workers > 1 and len(todo) > 1 and torch.device(device).type == "cpu":
            _run_in_workers(workers, directory, todo, chunks, params, selection, dtype_name, jacobian, batch_atoms, bar)
        for c in todo:
            if (directory / chunk_name(c)).is_dir():
                continue
            start, stop = chunks[c]
            arrays = _compute_chunk(params, selection, start, stop, compute_dtype, jacobian, batch_atoms, device)
            _write_chunk(directory, c, arrays)
            bar.update(stop - start)
    totals = {"n_structures": len(selection), "chunks": len(chunks)}
    write_json(directory / "complete.json", totals)
    return AEVCache(directory)


def selection_source(url: str, levels: Sequence[str], names, split, subsets) -> dict:
    """What a cache was built from, for ``pykinml-cache list`` (not part of the key)."""
    return {"database": url, "levels": list(levels), "names": names, "split": split, "subsets": subsets}


def precompute_database(
    db,
    params: AEVParams,
    levels: Sequence[str] = (),
    names: Sequence[str] | None = None,
    split: str | None = None,
    subsets: Sequence[str] | None = None,
    **options,
) -> AEVCache:
    """Select structures from database ``db`` (path or URL) and precompute their cache (see ``precompute``)."""
    from pykinml.db.connection import display_url, open_engine, resolve_url
    from pykinml.db.query import select_structures

    engine = open_engine(db)
    try:
        selection = select_structures(engine, levels=levels, names=names, split=split, subsets=subsets, forces=False)
    finally:
        engine.dispose()
    if len(selection) == 0:
        raise PykinmlError(f"no structures in {display_url(resolve_url(db))} match levels {list(levels)}, names {names}, split {split}")
    source = selection_source(display_url(resolve_url(db)), levels, list(names) if names else None, split,
                              list(subsets) if subsets else None)
    return precompute(selection, params, source=source, **options)
