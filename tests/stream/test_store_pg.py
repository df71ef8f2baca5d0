"""PgStore only (stream/store_pg.py): its schema, and its faults made for real on a real PostgreSQL server.
The contract both stores keep is tests/stream/test_store.py."""

from __future__ import annotations

from typing import Any

import pytest

from stream.store import SCHEMA_VERSION, StoreError
from tests.pgserver import database_url
from tests.stream.test_store import _in_threads, _run_job

# -- PostgreSQL only: its schema, and its faults made for real on the server ------------------------------


@pytest.fixture
def pg_url(request) -> str:
    return database_url(request)


def _pg(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def test_pg_schema_is_created_once_even_by_servers_starting_together(pg_url):
    from stream.store_pg import PgStore

    stores = _in_threads(*[lambda: PgStore(pg_url)] * 4, timeout_s=30)
    for s in stores:
        if isinstance(s, PgStore):
            s.close()
    assert all(isinstance(s, PgStore) for s in stores), stores
    with _pg(pg_url) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        types = dict(
            db.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            ).fetchall()
        )
    assert types["jobs.id"] == "text" and types["jobs.seq"] == "bigint"
    assert types["jobs.score"] == types["frames.time_s"] == "double precision"
    assert types["jobs.report_json"] == "text"  # the exact JSON text: jsonb would re-render the numbers


@pytest.mark.parametrize(
    ("sqlstate", "code"),
    [
        ("53100", "storage_full"),
        ("25006", "store_read_only"),
        ("55P03", "store_busy"),
        ("57014", "store_busy"),
        ("40001", "store_busy"),
        ("40P01", "store_busy"),
        ("23505", "store_error"),
        ("42P01", "store_error"),
        ("53200", "store_error"),
    ],
)
def test_pg_errors_are_mapped_by_sqlstate(sqlstate, code):
    """Each psycopg error class (as the server would raise it) to its StoreError code."""
    import psycopg

    from stream.store_pg import store_error

    err = store_error(psycopg.errors.lookup(sqlstate)("boom"), 2.0, "dff@db:5432/dff")
    assert (err.code, isinstance(err, OSError)) == (code, True)
    assert "boom" in str(err) and "intact" in str(err)


def test_pg_read_only_database(pg_url):
    from stream.store_pg import PgStore

    with PgStore(pg_url) as store:
        _run_job(store, "job-ro-0000")
        with _pg(pg_url) as db:  # a read-only replica, or a database an operator froze
            db.execute(f'ALTER DATABASE "{db.info.dbname}" SET default_transaction_read_only = on')
    with PgStore(pg_url) as store:
        with pytest.raises(StoreError) as err:
            store.add_job("job-ro-0001", "x.mp4", 1)
        assert err.value.code == "store_read_only" and "read-only" in str(err.value)
        assert store.report("job-ro-0000")["label"] == "fake"  # reads still work
        assert store.job("job-ro-0001") is None


def test_pg_locked_table_is_busy_after_the_timeout(pg_url):
    import time

    from stream.store_pg import PgStore

    with PgStore(pg_url, busy_timeout_s=0.3) as store, _pg(pg_url) as other:
        store.add_job("job-b-0000", "b.mp4", 1)
        with other.transaction():
            other.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")  # another process holds it
            t0 = time.monotonic()
            with pytest.raises(StoreError) as err:
                store.add_job("job-b-0001", "b.mp4", 1)
            waited_s = time.monotonic() - t0
        assert err.value.code == "store_busy" and "0.3 s" in str(err.value)
        assert 0.25 < waited_s < 5
        store.add_job("job-b-0001", "b.mp4", 1)  # the lock is gone: the same write now goes through
        assert [r.id for r in store.list_jobs(5)[0]] == ["job-b-0001", "job-b-0000"]


def test_pg_lost_connection_fails_one_call_then_reconnects(pg_url, caplog):
    from stream.store_pg import PgStore

    password = "s3cret-pw"  # trust auth accepts it; it must still never be shown
    url = pg_url.replace("postgres@", f"postgres:{password}@")
    with PgStore(url) as store:
        _run_job(store, "job-l-0000")
        with _pg(pg_url) as db:  # the server restarts, fails over, or an operator kills the session
            pids = db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
        assert pids == [(True,)]
        with pytest.raises(StoreError) as err:
            store.add_job("job-l-0001", "l.mp4", 1)
        assert err.value.code == "store_error" and "127.0.0.1" in str(err.value)
        assert password not in str(err.value) and password not in repr(err.value.__cause__)
        assert store.report("job-l-0000")["label"] == "fake"  # the next call connected again
        store.add_job("job-l-0001", "l.mp4", 1)
    assert "connecting again" in caplog.text and password not in caplog.text


def test_pg_unreachable_server_names_it_without_the_password():
    from stream.store_pg import PgStore
    from tests.servers import free_port

    port = free_port()  # nobody listens there
    with pytest.raises(StoreError) as err:
        PgStore(f"postgresql://dff:hunter2@127.0.0.1:{port}/reports", busy_timeout_s=1.0)
    message = str(err.value)
    assert err.value.code == "store_error" and f"dff@127.0.0.1:{port}/reports" in message
    assert "hunter2" not in message and "refused" in message.lower()


def test_pg_closed_store_refuses(pg_url):
    from stream.store_pg import PgStore

    store = PgStore(pg_url)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.job("x")


def test_pg_full_disk_is_storage_full_and_rolled_back(request, pg_url):
    """The store's tables in a tablespace on a 512 KiB tmpfs: writes fill it until PostgreSQL answers
    53100 (ENOSPC extending a table); that write is undone, reads and smaller writes go on."""
    import os
    import subprocess

    from stream.store_pg import PgStore
    from tests.pgserver import shared_server

    server = shared_server(request.config)
    tiny = server.root / f"tiny-{os.getpid()}-{id(pg_url)}"
    tiny.mkdir()
    owner = "" if server.user is None else f",uid={server.user.pw_uid},gid={server.user.pw_gid}"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=512k,mode=0700{owner}", "tmpfs", str(tiny)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here (needs root with CAP_SYS_ADMIN): {mounted.stderr!r}")
    dbname, space = pg_url.rsplit("/", 1)[1], f"tiny_{os.getpid()}"
    try:
        with _pg(server.url()) as db:
            db.execute(f"CREATE TABLESPACE {space} LOCATION '{tiny}'")
            db.execute(f'ALTER DATABASE "{dbname}" SET default_tablespace = {space}')
        with PgStore(pg_url) as store:
            body = _run_job(store, "job-full-00")
            store.set_meta("active_model", "a.pth")
            with pytest.raises(StoreError) as err:
                for i in range(400):  # 400 x 8 KiB of incompressible text: far more than the disk holds
                    store.add_job(f"job-fill-{i:04d}", os.urandom(4096).hex(), 1)
            assert err.value.code == "storage_full" and "storage is full" in str(err.value)
            assert store.job(f"job-fill-{i:04d}") is None and i > 3  # the failed write left nothing
            assert store.report("job-full-00") == body
            store.set_meta("active_model", "b.pth")  # an update that fits in its page still works
            assert store.get_meta("active_model") == "b.pth"
            assert store.delete("job-fill-0000") and store.job("job-fill-0000") is None
    finally:
        server.drop_database(dbname)
        with _pg(server.url()) as db:
            db.execute(f"DROP TABLESPACE IF EXISTS {space}")
        subprocess.run(["umount", str(tiny)], check=True, timeout=30)
