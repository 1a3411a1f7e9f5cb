"""``pykinml-cache``: build, list and clear the precomputed AEV (+ Jacobian) caches."""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from ..aev.params import PRESETS, AEVParams
from ..data.cache import cache_root, clear_caches, list_caches
from ..data.precompute import DEFAULT_CHUNK_ATOMS, precompute_database
from ..db.schema import SUBSETS
from ..errors import PykinmlError
from .errors import report_errors

PROGRAM = "pykinml-cache"


def aev_params(args) -> AEVParams:
    if args.preset:
        return AEVParams.preset(args.preset, args.elements)
    if not args.elements:
        raise PykinmlError("--elements is required (the model's element order, e.g. --elements H C N O) unless --preset")
    n_rad, n_rho, n_ang = args.aev
    return AEVParams.original(args.elements, n_rad, n_rho, n_ang, tuple(args.cutoffs), args.beta, args.zeta)


def cmd_build(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = precompute_database(
        args.db,
        aev_params(args),
        levels=args.levels or (),
        names=args.names,
        split=args.split,
        subsets=args.subsets,
        dtype=args.dtype,
        jacobian=not args.no_jacobian,
        cache_dir=args.cache_dir,
        chunk_atoms=args.chunk_atoms,
        progress=not args.quiet,
        workers=args.workers,
    )
    print(cache.path)
    return 0


def cmd_list(args) -> int:
    entries = list_caches(cache_root(args.cache_dir))
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    print(f"{cache_root(args.cache_dir) / 'aev'}: {len(entries)} caches")
    for e in entries:
        state = "complete" if e["complete"] else "INCOMPLETE"
        what = "AEV+Jacobian" if e["jacobian"] else "AEV"
        source = e["source"].get("database", "?")
        print(f"  {e['key']}  {state:10s}  {e['structures']:>9d} structures  {e['bytes'] / 1e6:9.1f} MB  "
              f"{what} {e['dtype']} {'/'.join(e['elements'])}  from {source}")
    return 0


def cmd_clear(args) -> int:
    if not args.keys and not args.all and not args.incomplete:
        raise PykinmlError("name the caches to clear, or pass --all or --incomplete")
    removed = clear_caches(cache_root(args.cache_dir), keys=args.keys or None, incomplete_only=args.incomplete)
    print(f"removed {len(removed)} caches from {cache_root(args.cache_dir) / 'aev'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    root_help = "cache root (default: $PYKINML_CACHE_DIR, else $XDG_CACHE_HOME/pykinml, else ~/.cache/pykinml)"

    sub = commands.add_parser("build", help="precompute AEVs (and Jacobians) of a database selection")
    sub.add_argument("--db", default=os.environ.get("PYKINML_DB"), required="PYKINML_DB" not in os.environ,
                     help="database: a SQLite path or any SQLAlchemy URL (default: $PYKINML_DB)")
    sub.add_argument("--levels", nargs="+", metavar="L", help="only structures labelled at all these levels")
    sub.add_argument("--names", nargs="+", metavar="N", help="only these names (%% patterns allowed)")
    sub.add_argument("--split", help="a stored split; with --subsets only those subsets")
    sub.add_argument("--subsets", nargs="+", choices=SUBSETS)
    sub.add_argument("--elements", nargs="+", metavar="EL", help="the model's elements, in its order")
    sub.add_argument("--preset", choices=sorted(PRESETS), help="TorchANI ANI-1x/2x constants instead")
    sub.add_argument("--aev", type=int, nargs=3, default=(16, 8, 8), metavar=("N_RAD", "N_RHO_ANG", "N_ANG"))
    sub.add_argument("--cutoffs", type=float, nargs=2, default=(5.2, 3.8), metavar=("RADIAL", "ANGULAR"))
    sub.add_argument("--beta", type=float, default=0.95)
    sub.add_argument("--zeta", type=float, default=8.0)
    sub.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    sub.add_argument("--no-jacobian", action="store_true", help="AEVs only (energy-only training)")
    sub.add_argument("--chunk-atoms", type=int, default=DEFAULT_CHUNK_ATOMS, help="atoms per resumable chunk")
    sub.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    sub.add_argument("--workers", type=int, default=1, help="single-threaded worker processes, one chunk each")
    sub.add_argument("--cache-dir", help=root_help)
    sub.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.set_defaults(run=cmd_build)

    sub = commands.add_parser("list", help="the caches under the cache root")
    sub.add_argument("--cache-dir", help=root_help)
    sub.add_argument("--json", action="store_true")
    sub.set_defaults(run=cmd_list)

    sub = commands.add_parser("clear", help="delete caches")
    sub.add_argument("keys", nargs="*", metavar="KEY")
    sub.add_argument("--all", action="store_true", help="every cache under the root")
    sub.add_argument("--incomplete", action="store_true", help="only interrupted, incomplete caches")
    sub.add_argument("--cache-dir", help=root_help)
    sub.set_defaults(run=cmd_clear)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_errors(PROGRAM, lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
