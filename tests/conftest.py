"""Shared fixtures: a database URL per backend (a SQLite file, and a real PostgreSQL server when installed)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from pykinml.cli.db import main as db_main
from pykinml.db import open_engine

from .postgres_server import start_or_skip_reason

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """One throwaway PostgreSQL server for the session, or a skip with the reason it cannot run."""
    server, reason = start_or_skip_reason("/tmp")
    if server is None:
        pytest.skip(reason)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A new, empty database: a SQLite file path, or a fresh database on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield str(tmp_path / "test.db")
        return
    server = request.getfixturevalue("postgres_server")
    name = "t_" + uuid.uuid4().hex[:12]
    url = server.create_database(name)
    yield url
    from sqlalchemy import create_engine

    create_engine(url).dispose()
    server.drop_database(name)


@pytest.fixture
def other_db_url(db_url, tmp_path, request):
    """A second empty database on the same backend as ``db_url``."""
    if "://" not in db_url:
        yield str(tmp_path / "other.db")
        return
    server = request.getfixturevalue("postgres_server")
    name = "t_" + uuid.uuid4().hex[:12]
    yield server.create_database(name)
    server.drop_database(name)


@pytest.fixture
def engine_of():
    """Open engines on URLs and dispose of them after the test."""
    engines = []

    def make(url):
        engines.append(open_engine(url))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def shared_data() -> Path:
    """../shared/data when present (benchmarks' and examples' reference data); tests skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not present at {SHARED_DATA}")
    return SHARED_DATA


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys):
    """Run ``pykinml-db`` in-process: returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        try:
            code = db_main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


os.environ.pop("PYKINML_DB", None)
