"""The PostgreSQL database a facelens home may keep its signed log and API keys in (issue 13).

Selected by a ``postgresql://`` URL (:func:`facelens.config.database_url`: ``--database``,
``$FACELENS_DATABASE``, or ``database`` in ``<home>/facelens.toml``); without one, the home keeps the
SQLite files under ``<home>/service/`` exactly as before. psycopg 3 is an optional dependency (the
``scale`` extra): it is imported only when a URL is given.

One schema: each component (``log``, ``keys``) records its schema version in ``facelens_schema``,
numbered as the SQLite files of the same component are (the log's version 2: signed entries; the keys'
version 2: grants bound to collection generations), and :func:`migrate` brings a database to the
version this facelens knows, under an advisory lock, so that several servers starting at once migrate
it once. Every connection runs with ``synchronous_commit = on``: a commit returns once the server has
its WAL on disk, so an entry is durable before the search that wrote it answers.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import FacelensError

__all__ = ["SCHEMA_TABLE", "DatabaseError", "connect", "is_database_url", "migrate", "redact", "schema_version"]

logger = logging.getLogger(__name__)

SCHEMA_TABLE = "facelens_schema"
_MIGRATION_LOCK = 0x66616365_6C656E73 & 0x7FFFFFFFFFFFFFFF  # pg_advisory_xact_lock key for schema changes
_CONNECT_TIMEOUT_S = 10


class DatabaseError(FacelensError):
    """The PostgreSQL database cannot be used: psycopg is missing, the server is unreachable, or its
    schema is newer than this facelens. HTTP 503 (the service cannot answer now; retry), like a search log
    that cannot be written."""

    status = 503
    code = "database_unavailable"


def is_database_url(location: object) -> bool:
    """Whether ``location`` names a PostgreSQL database (a ``postgresql://`` URL) rather than a file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "postgresql://..."
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def connect(url: str, *, read_only: bool = False) -> Any:
    """A new autocommit connection to ``url`` (transactions are opened with ``conn.transaction()``), with
    ``synchronous_commit = on``; ``read_only``: every transaction is read-only. Raises DatabaseError."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the scale extra is installed where tests run
        raise DatabaseError("a postgresql:// database needs psycopg 3: pip install 'facelens[scale]'") from None
    options = "-c synchronous_commit=on" + (" -c default_transaction_read_only=on" if read_only else "")
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S, options=options,
                               application_name="facelens")
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to {redact(url)}: {str(exc).strip()}") from None
    return conn


def schema_version(conn: Any, component: str) -> int | None:
    """The schema version of ``component`` recorded in the database, None when it has none (or no
    schema table): read-only."""
    row = conn.execute("SELECT to_regclass(%s)", (SCHEMA_TABLE,)).fetchone()
    if row is None or row[0] is None:
        return None
    found = conn.execute(f"SELECT version FROM {SCHEMA_TABLE} WHERE component = %s", (component,)).fetchone()
    return None if found is None else int(found[0])


def migrate(conn: Any, component: str, steps: Mapping[int, Sequence[str]], *, url: str) -> int:
    """Bring ``component``'s tables to the highest version in ``steps`` (version -> the statements that
    reach it from the one before; a database with no version gets every step in order), in one
    transaction under an advisory lock. Returns the version; DatabaseError when the database's version
    is newer than any this facelens knows (a newer facelens migrated it: upgrade this one)."""
    target = max(steps)
    if schema_version(conn, component) == target:  # the usual case: read-only, so a role without CREATE may run
        return target
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (component TEXT PRIMARY KEY, "
                     "version INTEGER NOT NULL, migrated TEXT NOT NULL DEFAULT now()::text)")
        current = schema_version(conn, component) or 0
        if current > target:
            raise DatabaseError(f"{redact(url)}: the {component} schema is version {current}, newer than this "
                                f"facelens knows ({target}): upgrade facelens")
        for version in sorted(v for v in steps if v > current):
            for statement in steps[version]:
                conn.execute(statement)
            logger.info("%s: %s schema migrated to version %d", redact(url), component, version)
        if current < target:
            conn.execute(f"INSERT INTO {SCHEMA_TABLE} (component, version) VALUES (%s, %s) ON CONFLICT (component) "
                         "DO UPDATE SET version = EXCLUDED.version, migrated = now()::text", (component, target))
    return target
