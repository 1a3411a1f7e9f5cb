"""Start and stop a real, throwaway PostgreSQL server for the test suite."""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = "apt-get install -y postgresql"
_PG_USER = "postgres"
_START_ATTEMPTS = 3
INITDB_ARGS = ("-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--no-locale")


def find_postgres_bin() -> str | None:
    """Return the directory holding initdb, pg_ctl and postgres, or None."""
    candidates: list[str] = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates += [os.path.dirname(initdb), os.path.dirname(os.path.realpath(initdb))]

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for d in candidates:
        if all(os.access(os.path.join(d, exe), os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1 that is not 5432."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 5432:
            return port


def _tail(path: Path, n: int = 30) -> str:
    """Return the last n lines of a text file, or a note if it is unreadable."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as exc:
        return f"<no log: {exc}>"


def _alive(pid: int) -> bool:
    """Return True if a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self, bin_dir: str, root: Path, port: int) -> None:
        """Record paths; use PostgresServer.start() to create a running server."""
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"
        self.log_file = root / "server.log"
        self.port = port
        self._pid: int | None = None
        self._owner = os.getpid()  # a forked child (e.g. a DataLoader worker) must not stop it
        self._stopped = False

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the server's maintenance database `postgres`."""
        return self.url_for("postgres")

    @classmethod
    def start(cls, base_dir: str | os.PathLike[str] | None = None) -> PostgresServer:
        """Create a fresh cluster under base_dir (default: the system temp dir) and start it."""
        bin_dir = find_postgres_bin()
        if bin_dir is None:
            raise RuntimeError(f"PostgreSQL binaries not found ({INSTALL_HINT})")
        as_root = os.geteuid() == 0
        if as_root:
            try:
                pw = pwd.getpwnam(_PG_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root but there is no '{_PG_USER}' system user to run PostgreSQL as "
                    f"(it comes with the Debian package: {INSTALL_HINT})"
                ) from None
        root = Path(tempfile.mkdtemp(prefix="pg-", dir=base_dir or tempfile.gettempdir()))
        os.chmod(root, 0o755)
        if as_root:
            os.chown(root, pw.pw_uid, pw.pw_gid)
        server = cls(bin_dir, root, _free_port())
        try:
            server._run("initdb", "-D", str(server.data_dir), *INITDB_ARGS)
            for attempt in range(_START_ATTEMPTS):
                try:
                    server._pg_ctl_start()
                    break
                except RuntimeError as exc:
                    if attempt + 1 == _START_ATTEMPTS or "already in use" not in str(exc):
                        raise
                    server.port = _free_port()  # lost a race for the port: try another one
        except BaseException:
            server.stop()
            raise
        atexit.register(server.stop)
        return server

    def _run(self, exe: str, *args: str) -> None:
        """Run a PostgreSQL program (as the postgres user when root); raise with the logs on failure."""
        what = exe if exe != "pg_ctl" else f"pg_ctl-{args[-1]}"
        cmd = [str(Path(self.bin_dir) / exe), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", _PG_USER, "--", *cmd]
        out = self.root / f"{what}.out"
        with open(out, "wb") as fh:  # a file, not a pipe: the postmaster must not inherit our pipes
            proc = subprocess.run(
                cmd, cwd=self.root, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, timeout=120
            )
        if proc.returncode != 0:
            hint = (
                " [as root it runs as user 'postgres', so every parent of the base dir must be"
                " traversable by that user, e.g. use /tmp]"
                if os.geteuid() == 0
                else ""
            )
            raise RuntimeError(
                f"PostgreSQL {what} failed (exit {proc.returncode}){hint}: {' '.join(cmd)}\n"
                f"--- {what} output ---\n{_tail(out)}\n--- server log ---\n{_tail(self.log_file)}"
            )

    def _pg_ctl_start(self) -> None:
        """Start the postmaster with pg_ctl and wait until it accepts connections."""
        opts = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.log_file)
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", log, "-w", "-t", "60", "-o", opts, "start")
        self._pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def _connect(self):  # -> psycopg.Connection
        """Open an autocommit psycopg connection to the maintenance database."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )

    def url_for(self, name: str) -> str:
        """Return the SQLAlchemy URL of database `name` on this server."""
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg", username="postgres", host="127.0.0.1", port=self.port, database=name
        ).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        from psycopg import sql

        with self._connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, terminating any sessions still connected to it."""
        from psycopg import sql

        with self._connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server immediately and delete its directory; safe to call more than once."""
        if self._stopped or os.getpid() != self._owner:
            return
        self._stopped = True
        if (self.data_dir / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "stop")
            except (RuntimeError, OSError, subprocess.TimeoutExpired):
                pass  # fall through to the kill below
        if self._pid is not None and _alive(self._pid):  # pg_ctl failed: kill the postmaster
            try:
                os.kill(self._pid, signal.SIGKILL)
            except OSError:
                pass
            deadline = time.monotonic() + 5
            while _alive(self._pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        """Return self; the server is already running."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the server."""
        self.stop()


def start_or_skip_reason(
    base_dir: str | os.PathLike[str] | None = None,
) -> tuple[PostgresServer | None, str | None]:
    """Return (server, None), or (None, reason) when PostgreSQL or psycopg is not installed."""
    if find_postgres_bin() is None:
        return None, f"PostgreSQL is not installed ({INSTALL_HINT})"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg (v3) is not installed (pip install 'psycopg[binary]')"
    return PostgresServer.start(base_dir), None
