"""Data-layer benchmark: import and select N ten-atom structures with forces at two levels.

Prints structures/second for import (core ingest from arrays, and end to end from an extxyz file
through ``pykinml-db import``) and for selection, and the selection's peak memory against the size
of the arrays it returns. Writes the numbers to ``bench/results/db.json``.

    python bench/db.py                      # SQLite, 100,000 structures
    python bench/db.py --url postgresql://user@host/db   # the same against PostgreSQL (tables must be empty)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import ase.io
import numpy as np
from ase import Atoms

from pykinml.db.connection import open_engine, resolve_url
from pykinml.db.frames import Frame, LevelLabel
from pykinml.db.importers import ImportOptions, import_file
from pykinml.db.ingest import SourceInfo, import_frames
from pykinml.db.query import select_structures
from pykinml.db.readers.labels import LevelKeys

NATOMS = 10


def generated_frames(n: int, seed: int, offset: int = 0):
    """N random ten-atom C/H/O geometries with energies and forces at levels 'low' and 'high'."""
    rng = np.random.default_rng(seed)
    numbers = np.array([6, 6, 8, 1, 1, 1, 1, 1, 1, 1])
    for k in range(n):
        positions = rng.normal(scale=1.5, size=(NATOMS, 3))
        yield Frame(
            numbers=numbers,
            positions=positions,
            source_index=offset + k,
            location=f"generated frame {offset + k}",
            name=f"mol{k % 10}",
            labels={
                "low": LevelLabel(energy=float(rng.normal()), forces=rng.normal(size=(NATOMS, 3))),
                "high": LevelLabel(energy=float(rng.normal()), forces=rng.normal(size=(NATOMS, 3))),
            },
        )


def bench_core_import(engine, n: int) -> dict:
    frames = list(generated_frames(n, seed=1))
    start = time.perf_counter()
    report = import_frames(engine, frames, SourceInfo("generated", "generated", "0" * 64, "bench"))
    elapsed = time.perf_counter() - start
    assert report.new_structures == n, report.summary()
    return {"structures": n, "seconds": elapsed, "structures_per_s": n / elapsed}


def bench_file_import(engine, n: int, workdir: str) -> dict:
    path = os.path.join(workdir, "bench.extxyz")
    with open(path, "w") as handle:
        for frame in generated_frames(n, seed=2, offset=10**7):
            atoms = Atoms(numbers=frame.numbers, positions=frame.positions)
            for level, label in frame.labels.items():
                atoms.info[f"{level}_energy"] = label.energy
                atoms.arrays[f"{level}_forces"] = label.forces
            ase.io.write(handle, atoms, format="extxyz")
    options = ImportOptions(levels=[LevelKeys.parse("low=low_energy,low_forces"),
                                    LevelKeys.parse("high=high_energy,high_forces")])
    start = time.perf_counter()
    report = import_file(engine, path, options)
    elapsed = time.perf_counter() - start
    assert report.new_structures == n, report.summary()
    return {"structures": n, "seconds": elapsed, "structures_per_s": n / elapsed}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def select_in_this_process(url: str) -> dict:
    """Time one selection of everything and measure its peak resident memory above the baseline."""
    engine = open_engine(url)
    select_structures(engine, levels=["low"], optional_levels=["high"], names=["none"])  # connect, compile
    baseline = _status_kib("VmRSS")
    start = time.perf_counter()
    selection = select_structures(engine, levels=["low"], optional_levels=["high"], forces=True)
    elapsed = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    arrays = [selection.ids, selection.natoms, selection.offsets, selection.numbers, selection.positions,
              selection.cells, selection.pbc, selection.names, *selection.energies.values(),
              *selection.forces.values(), *selection.has_energy.values(), *selection.has_forces.values()]
    array_bytes = sum(a.nbytes for a in arrays) + 8 * len(selection)  # names: one pointer each (shared str)
    n = len(selection)
    return {"structures": n, "seconds": elapsed, "structures_per_s": n / elapsed,
            "peak_bytes": (peak - baseline) * 1024, "array_bytes": array_bytes,
            "peak_over_arrays": (peak - baseline) * 1024 / array_bytes}


def bench_select(url: str) -> dict:
    """Run the selection in a fresh process, so its peak resident memory is the selection's own."""
    run = subprocess.run([sys.executable, __file__, "--select-only", url], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="structures for the core import and selection")
    parser.add_argument("--file-n", type=int, default=20_000, help="structures for the extxyz import")
    parser.add_argument("--url", help="database URL (default: a new SQLite file in a temporary directory)")
    parser.add_argument("--select-only", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "db.json"))
    args = parser.parse_args()
    if args.select_only:
        print(json.dumps(select_in_this_process(args.select_only)))
        return
    with tempfile.TemporaryDirectory() as workdir:
        url = args.url or os.path.join(workdir, "bench.db")
        engine = open_engine(url, create=True)
        backend = resolve_url(url).get_backend_name()
        results = {"backend": backend, "core_import": bench_core_import(engine, args.n)}
        results["select"] = bench_select(str(engine.url.render_as_string(hide_password=False)))
        results["file_import"] = bench_file_import(engine, args.file_n, workdir)
        engine.dispose()
    targets = {"core_import": 20_000, "select": 100_000}
    print(f"backend: {backend}")
    for key in ("core_import", "file_import", "select"):
        r = results[key]
        line = f"{key:12s} {r['structures']:>8d} structures in {r['seconds']:6.2f} s: {r['structures_per_s']:>9,.0f} /s"
        if key in targets:
            line += f"  (target {targets[key]:,}/s: ratio {r['structures_per_s'] / targets[key]:.2f})"
        print(line)
    sel = results["select"]
    print(f"select peak resident memory {sel['peak_bytes'] / 2**20:.1f} MiB for {sel['array_bytes'] / 2**20:.1f} MiB of arrays:"
          f" ratio {sel['peak_over_arrays']:.2f} (target <= 2)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
