"""The precompute stage and its cache: real databases in, memory-mapped AEVs and Jacobian rows out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pykinml.aev import AEVComputer, AEVParams, forces
from pykinml.cli.cache import main as cache_main
from pykinml.data import AEVCache, precompute
from pykinml.data.precompute import precompute_database
from pykinml.db import ImportOptions, LevelKeys, import_file, open_engine, select_structures
from pykinml.errors import PykinmlError

from .builders import label, random_clusters, random_molecules, write_extxyz
from .checks import ok, user_error
from .conftest import CliResult

HCNO = AEVParams.original(("H", "C", "N", "O"))


def make_database(url: str, frames, tmp_path: Path) -> str:
    label(frames, "dft", seed=1)
    path = write_extxyz(tmp_path / f"frames{len(frames)}.extxyz", frames)
    engine = open_engine(url, create=True)
    import_file(engine, path, ImportOptions(levels=[LevelKeys.parse("dft=dft_energy,dft_forces")]))
    engine.dispose()
    return url


@pytest.fixture
def mixed_db(db_url, tmp_path):
    """Molecules of three compositions and 20-atom clusters, interleaved, in SQLite and PostgreSQL."""
    frames = random_molecules(30, seed=3)
    clusters = random_clusters(10, 20, seed=4)
    return make_database(db_url, frames[:15] + clusters + frames[15:], tmp_path)


@pytest.fixture
def run_cache(capsys):
    def run(*args) -> CliResult:
        try:
            code = cache_main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_cached_aevs_and_forces_match_direct_computation(mixed_db, tmp_path):
    cache = precompute_database(mixed_db, HCNO, levels=["dft"], dtype="float64", cache_dir=tmp_path / "c",
                                chunk_atoms=100, batch_atoms=64, progress=False)
    selection = select_structures(open_engine(mixed_db), levels=["dft"])
    assert len(cache) == len(selection) == 40
    assert len(cache.manifest["chunks"]) > 3  # several chunks, several compute batches per chunk
    np.testing.assert_array_equal(cache.ids, selection.ids)
    picks = [39, 0, 17, 16, 22, 5]  # across chunks, unsorted: the batch comes back sorted
    batch = cache.batch(picks)
    np.testing.assert_array_equal(batch.indices, sorted(picks))
    frames = [selection.to_atoms(k) for k in batch.indices]
    computer = AEVComputer(params=HCNO, dtype="float64")
    np.testing.assert_allclose(batch.aev.numpy(), np.concatenate(computer.aev(frames)), rtol=0, atol=1e-12)
    # Forces from the cached rows equal -(dE/dG)·(dG/dx) with the dense Jacobian of each structure.
    dE_dG = torch.randn(batch.aev.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = forces(HCNO, batch.species, dE_dG, batch.jacobian).numpy()
    offsets = batch.offsets.numpy()
    expected = [-np.einsum("id,idjc->jc", dE_dG[a:b].numpy(), jac)
                for (a, b), jac in zip(zip(offsets[:-1], offsets[1:]), computer.jacobian(frames))]
    np.testing.assert_allclose(got, np.concatenate(expected), rtol=0, atol=1e-10)


def test_second_run_does_no_work(mixed_db, tmp_path):
    first = precompute_database(mixed_db, HCNO, cache_dir=tmp_path / "c", chunk_atoms=100, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in first.path.rglob("*")}
    again = precompute_database(mixed_db, HCNO, cache_dir=tmp_path / "c", chunk_atoms=100, progress=False)
    assert again.path == first.path
    assert {p: p.stat().st_mtime_ns for p in again.path.rglob("*")} == stamps


def test_key_follows_parameters_dtype_jacobian_and_geometry(tmp_path):
    url = make_database(str(tmp_path / "a.db"), random_molecules(6, seed=1), tmp_path)
    selection = select_structures(open_engine(url))
    keys = {
        precompute(selection, params, dtype=dtype, jacobian=jac, cache_dir=tmp_path / "c", progress=False).path.name
        for params, dtype, jac in [
            (HCNO, "float32", True),
            (HCNO, "float64", True),
            (HCNO, "float32", False),
            (AEVParams.original(("H", "C", "N", "O"), beta=1.0), "float32", True),
            (AEVParams.original(("C", "H", "N", "O")), "float32", True),  # element order is part of the layout
        ]
    }
    assert len(keys) == 5
    selection.positions[0, 0] += 1e-9  # one coordinate, one ulp-scale change: a new geometry
    moved = precompute(selection, HCNO, cache_dir=tmp_path / "c", progress=False).path.name
    assert moved not in keys


def test_energy_only_cache_has_no_jacobian(tmp_path):
    url = make_database(str(tmp_path / "a.db"), random_molecules(6, seed=1), tmp_path)
    cache = precompute_database(url, HCNO, jacobian=False, cache_dir=tmp_path / "c", progress=False)
    assert not list(cache.path.glob("chunk-*/radial*"))
    batch = cache.batch(range(6))
    assert batch.jacobian is None and batch.aev.shape == (sum(cache.natoms), HCNO.length)
    with pytest.raises(PykinmlError, match="AEVs only"):
        cache.batch([0], jacobian=True)


def test_jacobian_cache_is_smaller_than_half_the_dense_float64_jacobian(tmp_path):
    url = make_database(str(tmp_path / "a.db"), random_clusters(4, 40, seed=2), tmp_path)
    cache = precompute_database(url, HCNO, cache_dir=tmp_path / "c", progress=False)
    chunk_bytes = sum(p.stat().st_size for p in cache.path.glob("chunk-*/*.npy"))
    dense_bytes = sum(8 * n * HCNO.length * n * 3 for n in cache.natoms.tolist())
    assert chunk_bytes < 0.5 * dense_bytes


def test_unknown_element_and_empty_selection_write_nothing(tmp_path, run_cache):
    url = make_database(str(tmp_path / "a.db"), random_molecules(6, seed=1), tmp_path)
    root = tmp_path / "c"
    error = user_error(run_cache("build", "--db", url, "--elements", "H", "C", "--cache-dir", root, "--quiet"),
                       "structure id 2", "contains O", program="pykinml-cache")
    assert "['H', 'C']" in error
    user_error(run_cache("build", "--db", url, "--elements", "H", "C", "N", "O", "--names", "nothing",
                         "--cache-dir", root), "no structures", program="pykinml-cache")
    user_error(run_cache("build", "--db", url, "--cache-dir", root), "--elements", program="pykinml-cache")
    user_error(run_cache("build", "--db", url, "--preset", "ani1x", "--levels", "nope", "--cache-dir", root),
               "nope", program="pykinml-cache")
    assert not root.exists()


def test_cli_build_list_clear(tmp_path, run_cache):
    url = make_database(str(tmp_path / "a.db"), random_molecules(9, seed=1), tmp_path)
    root = tmp_path / "c"
    path = Path(ok(run_cache("build", "--db", url, "--preset", "ani1x", "--quiet", "--cache-dir", root)).out.strip())
    assert AEVCache(path).params == AEVParams.preset("ani1x")
    listing = ok(run_cache("list", "--cache-dir", root)).out
    assert path.name in listing and "complete" in listing and "9 structures" in listing
    user_error(run_cache("clear", "--cache-dir", root), "--all", program="pykinml-cache")
    user_error(run_cache("clear", "deadbeef", "--cache-dir", root), "deadbeef", program="pykinml-cache")
    assert "removed 1" in ok(run_cache("clear", path.name, "--cache-dir", root)).out
    assert not path.exists()


def test_killed_precompute_resumes_to_an_identical_cache(tmp_path):
    url = make_database(str(tmp_path / "big.db"), random_clusters(500, 24, seed=5), tmp_path)
    command = [sys.executable, "-m", "pykinml.cli.cache", "build", "--db", url, "--elements", "H", "C", "N", "O",
               "--chunk-atoms", "240", "--threads", "1", "--quiet"]
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    process = subprocess.Popen(command + ["--cache-dir", str(killed_root)])
    deadline = time.monotonic() + 120
    while len(list(killed_root.glob("aev/*/chunk-*"))) < 3:
        assert process.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    (directory,) = killed_root.glob("aev/*")
    done = len(list(directory.glob("chunk-*")))
    assert not (directory / "complete.json").exists() and done < 50  # 500 × 24 atoms / 240 per chunk
    with pytest.raises(PykinmlError, match="not a complete AEV cache"):
        AEVCache(directory)
    subprocess.run(command + ["--cache-dir", str(killed_root)], check=True)
    subprocess.run(command + ["--cache-dir", str(clean_root)], check=True)
    resumed, clean = files_of(directory), files_of(clean_root / "aev" / directory.name)
    assert not any(".tmp" in name for name in resumed)
    assert resumed.keys() == clean.keys() and len(resumed) > 50 * 8
    assert all(resumed[name] == clean[name] for name in clean)


def test_a_chunk_cut_short_by_a_crash_is_refused_and_built_again(tmp_path):
    # Chunk files are not fsynced: after a machine crash a renamed chunk can hold a file shorter than its header
    # says. Reading it names the file; the next precompute builds that chunk again, byte for byte.
    url = make_database(str(tmp_path / "a.db"), random_clusters(30, 12, seed=7), tmp_path)
    build = dict(cache_dir=tmp_path / "c", chunk_atoms=60, progress=False)
    cache = precompute_database(url, HCNO, **build)
    whole = files_of(cache.path)
    victim = cache.path / "chunk-000002" / "angular.npy"
    with open(victim, "r+b") as handle:
        handle.truncate(victim.stat().st_size // 2)
    with pytest.raises(PykinmlError, match=r"chunk-000002/angular\.npy is missing or cut short"):
        AEVCache(cache.path).batch([12])  # structure 12 lives in chunk 2 (5 structures of 12 atoms per chunk)
    untouched = cache.path / "chunk-000000" / "aev.npy"
    stamp = untouched.stat().st_mtime_ns
    rebuilt = precompute_database(url, HCNO, **build)
    assert files_of(rebuilt.path) == whole
    assert untouched.stat().st_mtime_ns == stamp  # only the cut chunk was computed again


def test_worker_processes_write_the_same_cache(tmp_path):
    url = make_database(str(tmp_path / "a.db"), random_clusters(40, 12, seed=6), tmp_path)
    caches = [precompute_database(url, HCNO, cache_dir=tmp_path / f"w{n}", chunk_atoms=60, workers=n, progress=False)
              for n in (1, 2)]
    assert len(caches[0].manifest["chunks"]) == 8
    assert files_of(caches[0].path) == files_of(caches[1].path)
