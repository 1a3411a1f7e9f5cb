"""Writing output files whole or not at all: a temporary file in the same directory, then a rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO

from .errors import PykinmlError


def output_directory(path: str | os.PathLike) -> str:
    """The directory ``path`` will be written in; a one-line error if it does not exist."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PykinmlError(f"-o {os.fspath(path)}: directory {directory} does not exist")
    return directory


def write_with(path: str | os.PathLike, write: Callable[[IO[str]], None]) -> None:
    """Call ``write(handle)`` on a temporary file next to ``path`` and rename it to ``path`` when it returns."""
    handle = tempfile.NamedTemporaryFile("w", dir=output_directory(path), delete=False, suffix=".tmp")
    try:
        with handle:
            write(handle)
        os.replace(handle.name, path)
    except BaseException:
        os.unlink(handle.name)
        raise


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all."""
    write_with(path, lambda handle: handle.write(text))
