"""AEV + Jacobian precompute against aevmod 1.1.0 (what PyKinML 1.1.2 calls), measured in the same run.

    python bench/aev.py [--n 500] [--threads N] [--scaling 10 30 100 300 1000]

1. The same C5H5 structures (../shared/data/pykinml/C5H5.db when present, imported through pykinml-db's
   legacy reader; else generated ring geometries) and AEV constants ((16, 8, 8), cutoffs 5.2/3.8 Å, β 0.95):
   aevmod's ``eval`` + ``eval_Jac`` per structure (run in its own virtualenv, bench/.venv-aevmod; it is
   single-threaded, as PyKinML calls it) against pykinml's whole precompute (AEV + Jacobian rows + chunked
   cache write) with the machine's cores (``--threads``, default all, torch's own default) and with one
   thread, as ratios per structure.
2. Cache bytes per structure against the dense float64 Jacobian (N·D·N·3·8 bytes).
3. Scaling 10 → 1,000 atoms at one density (H/C/N/O on a jittered 2.2 Å grid, ≈ 0.094 atoms/Å³, the density
   of liquid hydrocarbons), time and cache bytes per structure and per atom, two ways:
   - periodic boxes of that liquid: every atom has the same surroundings whatever the box size, so linear
     growth shows as flat per-atom numbers;
   - open clusters: per-atom numbers rise while small clusters are all surface (4 neighbours within the
     angular cutoff at 10 atoms, 18 at 1,000) and the work per atom follows the triples per atom.
4. On a CUDA device (when there is one): structures/second of the same precompute.

Numbers go to bench/results/aev.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from aevmod_env import aevmod_python, run_aevmod, saved_values, write_input  # noqa: E402
from builders import random_clusters  # noqa: E402

from pykinml.aev import AEVComputer, AEVParams, neighbor_pairs, pack  # noqa: E402
from pykinml.data.precompute import precompute  # noqa: E402
from pykinml.db import ImportOptions, import_file, open_engine, select_structures  # noqa: E402
from pykinml.db.query import Selection  # noqa: E402

C5H5_DB = HERE.parent.parent / "shared" / "data" / "pykinml" / "C5H5.db"


def c5h5_selection(n: int, workdir: str) -> tuple[Selection, str]:
    """The first ``n`` C5H5 structures from PyKinML's own database, or generated rings without it."""
    engine = open_engine(os.path.join(workdir, "c5h5.db"), create=True)
    if C5H5_DB.is_file():
        import_file(engine, C5H5_DB, ImportOptions())
        source = str(C5H5_DB)
    else:
        from ase import Atoms

        rng = np.random.default_rng(0)
        angle = np.linspace(0, 2 * np.pi, 6)[:-1]
        ring = np.stack([np.cos(angle), np.sin(angle), np.zeros(5)], axis=1)
        frames = []
        for _ in range(n):
            positions = np.concatenate([1.2 * ring, 2.28 * ring]) + rng.normal(0, 0.08, (10, 3))
            frames.append(Atoms("C5H5", positions=positions))
        from ase.io import write

        path = os.path.join(workdir, "c5h5.extxyz")
        write(path, frames)
        import_file(engine, path, ImportOptions())
        source = "generated C5H5 rings (../shared absent)"
    selection = select_structures(engine)
    return selection.geometry_slice(0, min(n, len(selection))), source


#: grid points per box side for each periodic box size (atoms = their product)
BOX_GRIDS = {10: (1, 2, 5), 30: (2, 3, 5), 100: (4, 5, 5), 300: (5, 6, 10), 1000: (10, 10, 10)}


def liquid_boxes(count: int, natoms: int, seed: int, spacing: float = 2.2) -> list:
    """``count`` periodic boxes of ``natoms`` H/C/N/O atoms on a jittered grid ``spacing`` Å apart."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    grid = BOX_GRIDS[natoms]
    sites = np.stack(np.meshgrid(*[np.arange(k) for k in grid], indexing="ij"), axis=-1).reshape(-1, 3) * spacing
    return [Atoms(symbols=list(rng.choice(list("HCNO"), natoms)), positions=sites + rng.normal(0, 0.1, sites.shape),
                  cell=np.diag(np.array(grid) * spacing), pbc=True) for _ in range(count)]


def selection_of(frames) -> Selection:
    counts = np.array([len(f) for f in frames])
    return Selection(
        ids=np.arange(1, len(frames) + 1), natoms=counts, offsets=np.concatenate([[0], np.cumsum(counts)]),
        numbers=np.concatenate([f.numbers for f in frames]), positions=np.concatenate([f.positions for f in frames]),
        cells=np.stack([np.asarray(f.cell) for f in frames]), pbc=np.stack([f.pbc for f in frames]),
        names=np.array([None] * len(frames), dtype=object), levels=(),
    )


def time_precompute(selection: Selection, params: AEVParams, device="cpu", repeat: int = 3) -> dict:
    """Best of ``repeat`` full precompute runs (fresh cache directory each time): seconds and cache bytes."""
    best, size = float("inf"), 0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as root:
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            cache = precompute(selection, params, cache_dir=root, device=device, progress=False)
            best = min(best, time.perf_counter() - start)
            size = sum(p.stat().st_size for p in cache.path.glob("chunk-*/*.npy"))
    return {"seconds": best, "per_structure_s": best / len(selection), "cache_bytes": size,
            "cache_bytes_per_structure": size / len(selection)}


def compare_with_aevmod(selection: Selection, params: AEVParams, workdir: str, repeat: int, threads: int) -> dict:
    python = aevmod_python()
    n_rad, n_rho, n_ang = params.radial_length, len(params.angular_shifts), len(params.angle_sections)
    write_input(os.path.join(workdir, "in.npz"), selection.numbers, selection.positions, selection.offsets,
                list(params.elements), n_rad, n_rho, n_ang, params.radial_cutoff, params.angular_cutoff, params.beta)
    ref = run_aevmod(python, os.path.join(workdir, "in.npz"), os.path.join(workdir, "out.npz"), jacobian=True,
                     save_values=3, repeat=repeat)
    ours = time_precompute(selection, params, repeat=repeat)
    torch.set_num_threads(1)
    one = time_precompute(selection, params, repeat=repeat)
    torch.set_num_threads(threads)
    aevmod_per = float(ref["aev_mean_seconds"] + ref["jac_mean_seconds"])
    # Same AEVs (float64) as aevmod on the saved structures: the definitions agree.
    computer = AEVComputer(params=params, dtype="float64")
    frames = [selection.to_atoms(k) for k in range(3)]
    aev_diff = max(float(np.abs(a - b).max()) for (a, _), b in zip(saved_values(ref), computer.aev(frames)))
    dense = sum(8 * n * params.length * n * 3 for n in np.diff(selection.offsets).tolist()) / len(selection)
    return {
        "structures": len(selection),
        "aevmod_aev_ms": 1e3 * float(ref["aev_mean_seconds"]),
        "aevmod_jac_ms": 1e3 * float(ref["jac_mean_seconds"]),
        "aevmod_jac_peak_bytes_per_structure": float(ref.get("jac_peak_bytes_per_structure", np.nan)),
        "pykinml_precompute_ms": 1e3 * ours["per_structure_s"],
        "speedup": aevmod_per / ours["per_structure_s"],
        "pykinml_precompute_one_thread_ms": 1e3 * one["per_structure_s"],
        "speedup_one_thread": aevmod_per / one["per_structure_s"],
        "cache_bytes_per_structure": ours["cache_bytes_per_structure"],
        "dense_float64_jacobian_bytes_per_structure": dense,
        "cache_over_dense": ours["cache_bytes_per_structure"] / dense,
        "max_abs_aev_difference_vs_aevmod": aev_diff,
    }


def scaling(sizes: list[int], params: AEVParams, atoms_per_size: int, periodic: bool, device="cpu") -> list[dict]:
    rows = []
    for natoms in sizes:
        count = max(2, atoms_per_size // natoms)
        make = liquid_boxes if periodic else lambda *a, **k: random_clusters(*a, **k, spacing=2.2)
        selection = selection_of(make(count, natoms, seed=natoms))
        result = time_precompute(selection, params, device=device, repeat=2)
        first = pack(params, selection.numbers[:natoms], selection.positions[:natoms], selection.offsets[:2],
                     selection.cells[:1], selection.pbc[:1])
        neighbours = neighbor_pairs(first, params.angular_cutoff).center.numel() / natoms
        rows.append({
            "atoms": natoms, "structures": count, "angular_neighbours_per_atom": neighbours,
            "ms_per_structure": 1e3 * result["per_structure_s"],
            "us_per_atom": 1e6 * result["per_structure_s"] / natoms,
            "cache_mb_per_structure": result["cache_bytes_per_structure"] / 1e6,
            "cache_kb_per_atom": result["cache_bytes_per_structure"] / natoms / 1e3,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="C5H5 structures")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs, both sides")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--scaling", type=int, nargs="*", default=[10, 30, 100, 300, 1000])
    parser.add_argument("--scaling-atoms", type=int, default=6000, help="atoms per size in the scaling table")
    parser.add_argument("--out", default=str(HERE / "results" / "aev.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {"torch_threads": args.threads, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as workdir:
        selection, source = c5h5_selection(args.n, workdir)
        results["c5h5_source"] = source
        c5h5 = AEVParams.original(("C", "H"))
        results["c5h5"] = r = compare_with_aevmod(selection, c5h5, workdir, args.repeat, args.threads)
        print(f"C5H5 ({r['structures']} structures from {source}), AEV (16, 8, 8), cutoffs 5.2/3.8, β 0.95")
        print(f"  aevmod 1.1.0 eval + eval_Jac : {r['aevmod_aev_ms']:.2f} + {r['aevmod_jac_ms']:.2f} ms/structure "
              f"(Jacobian peak {r['aevmod_jac_peak_bytes_per_structure'] / 1e6:.2f} MB/structure)")
        print(f"  pykinml precompute (AEV + Jacobian + cache write, float32), {args.threads} threads: "
              f"{r['pykinml_precompute_ms']:.3f} ms/structure; 1 thread: {r['pykinml_precompute_one_thread_ms']:.3f}")
        print(f"  speed-up: {r['speedup']:.1f}x with {args.threads} threads (target >= 50x on this machine), "
              f"{r['speedup_one_thread']:.1f}x with 1 thread")
        print(f"  cache {r['cache_bytes_per_structure'] / 1e3:.1f} kB/structure vs dense float64 Jacobian "
              f"{r['dense_float64_jacobian_bytes_per_structure'] / 1e3:.1f} kB: ratio {r['cache_over_dense']:.3f} "
              "(target <= 0.5)")
        print(f"  max |AEV difference| vs aevmod (float64): {r['max_abs_aev_difference_vs_aevmod']:.2e}")
    if args.scaling:
        hcno = AEVParams.original(("H", "C", "N", "O"))
        for periodic, label in ((True, "periodic boxes of one liquid"), (False, "open clusters")):
            rows = scaling(args.scaling, hcno, args.scaling_atoms, periodic)
            results["scaling_periodic" if periodic else "scaling"] = rows
            print(f"Scaling, H/C/N/O {label} (AEV length 704), float32, precompute incl. cache write, {args.threads} threads:")
            print(f"  {'atoms':>6} {'neighbours<3.8':>15} {'ms/structure':>13} {'us/atom':>9} {'MB/structure':>13} {'kB/atom':>8}")
            for row in rows:
                print(f"  {row['atoms']:>6} {row['angular_neighbours_per_atom']:>15.1f} {row['ms_per_structure']:>13.2f} "
                      f"{row['us_per_atom']:>9.1f} {row['cache_mb_per_structure']:>13.3f} {row['cache_kb_per_atom']:>8.1f}")
            first, last = rows[0], rows[-1]
            print(f"  per-atom time {last['atoms']}/{first['atoms']} atoms: {last['us_per_atom'] / first['us_per_atom']:.2f}x, "
                  f"per-atom cache: {last['cache_kb_per_atom'] / first['cache_kb_per_atom']:.2f}x (1.0 = linear)")
    if torch.cuda.is_available():
        with tempfile.TemporaryDirectory() as workdir:
            selection, _ = c5h5_selection(max(args.n, 2000), workdir)
            gpu = time_precompute(selection, AEVParams.original(("C", "H")), device="cuda", repeat=2)
        results["cuda"] = {"device": torch.cuda.get_device_name(), "structures_per_s": 1 / gpu["per_structure_s"]}
        print(f"CUDA ({results['cuda']['device']}): {results['cuda']['structures_per_s']:.0f} C5H5 structures/s")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
