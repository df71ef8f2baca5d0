"""A real PostgreSQL server for the tests: Debian's binaries (``initdb``, ``postgres``, ``pg_ctl``), one cluster
per test session in a fresh temporary directory, on 127.0.0.1 at a free port only, trust auth, and the fast
settings of a throwaway cluster (``fsync=off``, ``synchronous_commit=off``, ``full_page_writes=off``).

``initdb`` and ``postgres`` refuse to run as root: as root the cluster belongs to the ``postgres`` user (or
``nobody``), and every server binary runs through ``setpriv`` as that user. ``postgres`` is our own child
(``setpriv --pdeathsig TERM`` execs it, so a test run that dies takes its server with it); the session stops
it with ``pg_ctl stop -m fast``. Each test gets a database of its own (``CREATE DATABASE`` on the admin
connection; dropped afterwards).

Not installed: the tests that need it skip, saying how to install it; with ``CI=true`` they fail instead (CI
installs it in ``.ci/run`` and must run them).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.servers import free_port

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
ADMIN = "postgres"  # the cluster's superuser (initdb -U)
_FAST = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "40",
    "log_min_messages": "warning",
}
_STASH = pytest.StashKey["PgServer | tuple[bool, str]"]()  # the server, or (skip?, why there is none)
_names = itertools.count()


def unavailable(reason: str) -> NoReturn:
    """Skip the test (fail it in CI, which always has PostgreSQL: .ci/run installs it)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(reason)


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb``, ``postgres`` and ``pg_ctl``: the one ``initdb`` on PATH links into,
    else the newest /usr/lib/postgresql/*/bin (Debian keeps them off PATH); None if there is none."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(d: str) -> int:
        name = Path(d).parent.name
        return int(name) if name.isdigit() else 0

    candidates += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for d in candidates:
        if all(os.access(d / exe, os.X_OK) for exe in ("initdb", "postgres", "pg_ctl")):
            return d
    return None


def _server_user() -> pwd.struct_passwd | None:
    """Whom the server runs as: ourselves (None), or, as root, an unprivileged user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PgServer:
    """A running cluster. ``url(db)``: a libpq URL for database ``db`` as the superuser."""

    bin_dir: Path
    root: Path  # data/, sock/, postgres.log (removed on stop)
    port: int
    user: pwd.struct_passwd | None
    proc: subprocess.Popen[bytes]

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        auth = ADMIN if password is None else f"{ADMIN}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def admin(self) -> Any:
        """An autocommit superuser connection to the ``postgres`` database (close it)."""
        import psycopg

        return psycopg.connect(self.url(), autocommit=True, connect_timeout=10)

    def create_database(self) -> str:
        """A new empty database; its name."""
        name = f"dff_test_{os.getpid()}_{next(_names)}"
        with self.admin() as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, n_chars: int = 3000) -> str:
        try:
            return (self.root / "postgres.log").read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def as_server_user(self, *argv: str) -> list[str]:
        return _as_user(self.user, list(argv))

    def chown(self, path: Path) -> None:
        """Give ``path`` to the server's user (a directory the server must write)."""
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def stop(self) -> None:
        """``pg_ctl stop -m fast``, then wait for our child; the directory goes too."""
        try:
            if self.proc.poll() is None:
                subprocess.run(
                    self.as_server_user(str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast")
                    + ["-w", "-t", str(int(STOP_TIMEOUT_S))],
                    check=False,
                    capture_output=True,
                    timeout=STOP_TIMEOUT_S + 5,
                )
                try:
                    self.proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _as_user(user: pwd.struct_passwd | None, argv: list[str]) -> list[str]:
    # --pdeathsig: the server dies with the process that started it (postgres is exec'd, not forked)
    prefix = ["setpriv", "--pdeathsig", "TERM"]
    if user is not None:
        prefix += [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    return prefix + argv


def start_server(bin_dir: Path) -> PgServer:
    """initdb a fresh cluster and start it; a port taken by someone else in between is retried."""
    user = _server_user()
    # /tmp itself (not pytest's 0700 tmp_path): the server's user must reach the directory
    root = Path(tempfile.mkdtemp(prefix="dff-pg-", dir="/tmp" if user is not None else None))
    try:
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        (root / "sock").mkdir()
        if user is not None:
            os.chown(root / "sock", user.pw_uid, user.pw_gid)
        initdb = [str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", ADMIN, "--auth=trust", "-E", "UTF8"]
        done = subprocess.run(
            _as_user(user, [*initdb, "--locale=C", "--no-sync", "--no-instructions"]),
            capture_output=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")
        last = ""
        for _ in range(3):
            server = _start_postgres(bin_dir, root, user, free_port())
            if isinstance(server, PgServer):
                return server
            last = server
        raise RuntimeError(f"postgres did not start: {last}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _start_postgres(bin_dir: Path, root: Path, user: pwd.struct_passwd | None, port: int) -> PgServer | str:
    """The server, once it accepts connections; or its log when it exited (the port was taken)."""
    import psycopg

    settings = [arg for key, value in _FAST.items() for arg in ("-c", f"{key}={value}")]
    argv = [str(bin_dir / "postgres"), "-D", str(root / "data"), "-p", str(port), "-k", str(root / "sock"), *settings]
    with open(root / "postgres.log", "ab") as log:
        proc = subprocess.Popen(_as_user(user, argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    server = PgServer(bin_dir, root, port, user, proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            return server.log_tail()
        try:
            psycopg.connect(server.url(), connect_timeout=2).close()
            return server
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(10)
                raise RuntimeError(f"postgres did not accept connections in {START_TIMEOUT_S:g} s") from None
            time.sleep(0.05)


def shared_server(config: pytest.Config) -> PgServer:
    """The session's server, started by the first test that asks (stopped when the session ends). Skips (fails
    in CI) when PostgreSQL or psycopg is not installed; fails when it is but does not start. Either is
    remembered: later tests do not try again."""
    found = config.stash.get(_STASH, None)
    if found is None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            found = (True, "psycopg is not installed: pip install -e '.[dev]'")
        else:
            bin_dir = find_bin_dir()
            if bin_dir is None:
                found = (True, "PostgreSQL's initdb/postgres/pg_ctl not found (apt-get install postgresql)")
            else:
                try:
                    found = start_server(bin_dir)
                except (RuntimeError, OSError, subprocess.SubprocessError) as err:
                    found = (False, f"PostgreSQL did not start: {err}")
                else:
                    config.add_cleanup(found.stop)
        config.stash[_STASH] = found
    if isinstance(found, tuple):
        skip, reason = found
        unavailable(reason) if skip else pytest.fail(reason)
    return found


def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server, dropped when the requesting test ends; its URL."""
    server = shared_server(request.config)
    name = server.create_database()
    request.addfinalizer(lambda: server.drop_database(name))
    return server.url(name)
