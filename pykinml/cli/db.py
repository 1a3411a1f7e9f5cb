"""``pykinml-db``: import files into a database, store splits, show what it holds, export selections."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..db.connection import open_engine, resolve_url
from ..db.export import export_extxyz
from ..db.importers import ImportOptions, import_file
from ..db.info import database_info, format_info
from ..db.ingest import ON_CONFLICT
from ..db.readers.labels import LevelKeys, Units
from ..db.schema import SUBSETS
from ..db.splits import create_split, export_mask, import_mask
from ..errors import PykinmlError
from ..units import DEFAULT_FORCE_UNIT, ENERGY_UNITS, FORCE_UNITS, energy_factor, force_factor
from .errors import report_errors

PROGRAM = "pykinml-db"


def _level_names(pairs: list[str]) -> dict[int, str]:
    names = {}
    for pair in pairs:
        number, sep, name = pair.partition("=")
        if not sep or not number.strip().lstrip("-").isdigit() or not name.strip():
            raise PykinmlError(f"--level-names {pair!r}: expected FIDELITY=NAME, e.g. 1=wB97X-D/6-311++G(d,p)")
        names[int(number)] = name.strip()
    return names


def _units(args) -> Units:
    energy_unit = args.units.lower()
    force_unit = args.force_units or DEFAULT_FORCE_UNIT[energy_unit]
    return Units(energy=energy_factor(energy_unit), forces=force_factor(force_unit))


def cmd_import(args) -> int:
    options = ImportOptions(
        levels=[LevelKeys.parse(text) for text in args.level],
        level_name=args.level_name,
        level_names=_level_names(args.level_names),
        units=_units(args),
        name=args.name,
        source_name=args.source_name,
        formula=args.formula,
        on_conflict=args.on_conflict,
        format=args.format,
    )
    if args.source_name and len(args.paths) > 1:
        raise PykinmlError("--source-name names one file; import the files one at a time")
    url = resolve_url(args.db)
    new_file = url.get_backend_name() == "sqlite" and bool(url.database) and not os.path.exists(url.database)
    engine = open_engine(url, create=True)
    imported = 0
    try:
        for path in args.paths:
            print(import_file(engine, path, options).summary())
            imported += 1
    except PykinmlError:
        engine.dispose()
        if new_file and not imported:  # leave no empty database behind a failed first import
            os.remove(url.database)
        raise
    return 0


def cmd_split(args) -> int:
    if args.val_fraction is not None and not args.mask:
        raise PykinmlError("--val-fraction goes with --mask (with --fractions, give the val share there)")
    engine = open_engine(args.db)
    if args.mask:
        val_fraction = 0.1 if args.val_fraction is None else args.val_fraction
        counts = import_mask(engine, args.name, args.mask, val_fraction=val_fraction, seed=args.seed,
                             replace=args.replace)
    else:
        counts = create_split(
            engine, args.name, fractions=args.fractions, counts=args.counts, seed=args.seed,
            levels=args.levels or (), names=args.names, replace=args.replace, test_names=args.test_names,
        )
    print(f"split {args.name!r}: " + ", ".join(f"{subset} {counts[subset]}" for subset in SUBSETS))
    return 0


def cmd_export_mask(args) -> int:
    engine = open_engine(args.db)
    lines = export_mask(engine, args.split, args.output)
    print(f"{args.output}: {lines} lines of split {args.split!r}")
    return 0


def cmd_info(args) -> int:
    info = database_info(open_engine(args.db))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def cmd_export(args) -> int:
    if (args.split is None) != (args.subset is None):
        raise PykinmlError("--split and --subset go together")
    engine = open_engine(args.db)
    written = export_extxyz(engine, args.output, levels=args.levels, names=args.names, split=args.split,
                            subset=args.subset)
    print(f"{args.output}: {written} structures")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    db_help = "database: a SQLite path or any SQLAlchemy URL (default: $PYKINML_DB)"

    def add_db(sub):
        sub.add_argument("--db", default=os.environ.get("PYKINML_DB"), required="PYKINML_DB" not in os.environ,
                         help=db_help)

    sub = commands.add_parser("import", help="import xyz/extxyz/ASE-readable files, ASE databases, "
                                             "PyKinML .db files, mlearn/SNAP JSON")
    sub.add_argument("paths", nargs="+", metavar="PATH")
    add_db(sub)
    sub.add_argument("--level", action="append", default=[], metavar="NAME=ENERGY_KEY[,FORCES_KEY[,STRESS_KEY]]",
                     help="map info/array keys of each frame to a level (repeatable)")
    sub.add_argument("--level-name", default="default",
                     help="level for ASE calculator results and mlearn JSON labels (no --level)")
    sub.add_argument("--level-names", nargs="+", default=[], metavar="FIDELITY=NAME",
                     help="names of PyKinML fidelities (default fidelity_<n>)")
    sub.add_argument("--units", default="eV", choices=sorted(ENERGY_UNITS), type=str.lower,
                     help="energy unit of the file; forces follow (hartree: Hartree/Bohr)")
    sub.add_argument("--force-units", choices=sorted(FORCE_UNITS), type=str.lower, help="override the force unit")
    sub.add_argument("--name", help="tag every structure with this name (default: info['name'], <element>-<group> "
                                     "for mlearn JSON, or the file stem)")
    sub.add_argument("--source-name", help="provenance name used by mask files (default: the file stem)")
    sub.add_argument("--formula", help="species order of a PyKinML file whose name is not its formula")
    sub.add_argument("--format", help="force an ase.io format, or pykinml-legacy / ase-db / mlearn-json")
    sub.add_argument("--on-conflict", choices=ON_CONFLICT, default="error",
                     help="when a structure already has a different label at a level")
    sub.set_defaults(run=cmd_import)

    sub = commands.add_parser("split", help="store a train/val/test split in the database")
    add_db(sub)
    sub.add_argument("--name", required=True, help="split name")
    how = sub.add_mutually_exclusive_group(required=True)
    how.add_argument("--fractions", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"))
    how.add_argument("--counts", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"))
    how.add_argument("--mask", metavar="FILE", help="PyKinML mask file: <source>/<id> 2|-1")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--val-fraction", type=float, help="with --mask: share of the 2-pool for val (default 0.1)")
    sub.add_argument("--levels", nargs="+", help="only structures labelled at all these levels")
    sub.add_argument("--names", nargs="+", help="only structures with these names (%% patterns allowed)")
    sub.add_argument("--test-names", nargs="+", metavar="NAME",
                     help="a fixed test set: the structures with these names (%% patterns allowed), kept out of the "
                          "random part (give it a test fraction of 0)")
    sub.add_argument("--replace", action="store_true", help="overwrite a split of the same name")
    sub.set_defaults(run=cmd_split)

    sub = commands.add_parser("export-mask", help="write a stored split as a PyKinML mask file")
    add_db(sub)
    sub.add_argument("--split", required=True)
    sub.add_argument("-o", "--output", required=True)
    sub.set_defaults(run=cmd_export_mask)

    sub = commands.add_parser("info", help="counts of structures, levels, names and splits")
    add_db(sub)
    sub.add_argument("--json", action="store_true", help="machine-readable output (stable format)")
    sub.set_defaults(run=cmd_info)

    sub = commands.add_parser("export", help="write a selection as extxyz with every level's labels")
    add_db(sub)
    sub.add_argument("-o", "--output", required=True, metavar="FILE.extxyz")
    sub.add_argument("--levels", nargs="+", metavar="L")
    sub.add_argument("--names", nargs="+", metavar="N")
    sub.add_argument("--split")
    sub.add_argument("--subset", choices=SUBSETS)
    sub.set_defaults(run=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_errors(PROGRAM, lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
