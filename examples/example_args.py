"""Command-line helpers the example scripts share (they run as ``python examples/<script>.py``, so this
folder is on ``sys.path``)."""

from __future__ import annotations

import argparse
import sys


def hydra_string(value) -> str:
    """A value quoted for a Hydra override, so paths and URLs with any characters stay one string."""
    return "'" + str(value).replace("'", "\\'") + "'"


def widths(text: str) -> list[int]:
    """Hidden layer widths from "160,128,96"."""
    try:
        return [int(width) for width in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give widths as integers separated by commas, e.g. 64,32") from None


def database_overrides(db: str | None, levels: list[str]) -> list[str]:
    """The ``pykinml-train`` overrides that train on ``levels`` of database ``db`` (none: the demo database)."""
    if db is None:
        return []
    return ["data=database", f"data.db={hydra_string(db)}", f"data.levels=[{','.join(hydra_string(level) for level in levels)}]"]


def neurons_override(neurons: list[int] | None) -> list[str]:
    """``model.neurons=[...]`` when ``--neurons`` was given."""
    return [f"model.neurons=[{','.join(map(str, neurons))}]"] if neurons else []


def run_main(main) -> None:
    """Run an example's ``main``; a pykinml input error ends it with one line and a non-zero exit."""
    from pykinml.errors import PykinmlError

    try:
        sys.exit(main())
    except PykinmlError as exc:
        sys.exit(f"{sys.argv[0]}: error: {exc}")
