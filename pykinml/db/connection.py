"""Opening a database from a path or any SQLAlchemy URL: driver choice, SQLite pragmas, schema checks."""

from __future__ import annotations

import importlib.util
import os
import sqlite3

from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from ..errors import PykinmlError
from .schema import SCHEMA_VERSION, Base, meta_table


def resolve_url(db: str | os.PathLike) -> URL:
    """A SQLAlchemy URL from a URL string or a plain file path (a path means SQLite)."""
    text = os.fspath(db)
    if "://" not in text:
        return URL.create("sqlite", database=os.path.abspath(text))
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise PykinmlError(f"--db {text!r} is not a database URL or path: {exc}") from None
    if url.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        if importlib.util.find_spec("psycopg") is not None:
            url = url.set(drivername="postgresql+psycopg")
    return url


def display_url(url: URL) -> str:
    """The URL as it may be printed: never the password."""
    return url.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # LIKE is case-sensitive on PostgreSQL; make SQLite agree so name patterns select the same rows.
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _is_legacy_pykinml(path: str) -> bool:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        con.close()
    except sqlite3.Error:
        return False
    return {"xyz", "energy"} <= tables


def open_engine(db: str | os.PathLike | URL, create: bool = False) -> Engine:
    """Connect to ``db`` and check its schema; with ``create`` make the tables of a new database.

    Errors are one line naming the database: a missing SQLite file, an unreachable server, a file
    that is not a pykinml database, or a schema newer than this code.
    """
    url = db if isinstance(db, URL) else resolve_url(db)
    shown = display_url(url)
    is_sqlite = url.get_backend_name() == "sqlite"
    if is_sqlite and url.database not in (None, "", ":memory:"):
        path = url.database
        if not os.path.exists(path):
            if not create:
                raise PykinmlError(f"database {path} does not exist (pykinml-db import creates it)")
            parent = os.path.dirname(path) or "."
            if not os.path.isdir(parent):
                raise PykinmlError(f"cannot create database {path}: directory {parent} does not exist")
    try:
        engine = create_engine(url)
    except (NoSuchModuleError, ImportError) as exc:
        raise PykinmlError(f"no driver for {shown}: {exc} (pip install 'pykinml[postgres]')") from None
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc).splitlines()[0]
        raise PykinmlError(f"cannot connect to {shown}: {reason}") from None
    if "structure" not in tables:
        if is_sqlite and url.database and os.path.exists(url.database) and _is_legacy_pykinml(url.database):
            engine.dispose()
            raise PykinmlError(
                f"{url.database} is an original PyKinML database; import it first: "
                f"pykinml-db import {url.database} --db NEW.db"
            )
        if not create:
            engine.dispose()
            raise PykinmlError(f"{shown} is not a pykinml database (it has no table 'structure')")
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(meta_table.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}])
        return engine
    with engine.connect() as conn:
        version = conn.execute(select(meta_table.c.value).where(meta_table.c.key == "schema_version")).scalar()
    if version is None or int(version) > SCHEMA_VERSION:
        engine.dispose()
        raise PykinmlError(f"{shown} has schema version {version}; this pykinml reads version {SCHEMA_VERSION}")
    return engine
