"""Which store a server uses: ``open_store(settings)`` — SQLite under ``data_dir`` (the embedded default), or
PostgreSQL when ``DFF_DATABASE_URL`` is set (stream/store_pg.py; psycopg is in the ``[ray]`` extra and is
imported only then). Both have the same interface and guarantees (stream/store.py's docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.config import Settings
from pipeline.errors import ConfigError
from stream.store import Store

if TYPE_CHECKING:
    from stream.store_pg import PgStore


def open_store(settings: Settings) -> Store | PgStore:
    """The store ``settings`` ask for, opened (schema created or migrated, ready). Blocking: call in a thread."""
    if settings.database_url is None:
        return Store(settings.data_dir, settings.store_busy_timeout_s)
    try:
        from stream.store_pg import PgStore
    except ImportError as err:  # psycopg is optional: the defaults never need it
        raise ConfigError(
            f"DFF_DATABASE_URL needs PostgreSQL support: pip install 'deepfake-forensics[ray]' ({err})"
        ) from None
    return PgStore(settings.database_url, settings.store_busy_timeout_s)
