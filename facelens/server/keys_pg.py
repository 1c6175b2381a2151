"""The API keys in PostgreSQL: one key table that every ``facelens serve`` of a deployment checks.

The same rows as the SQLite key file (facelens/server/keys.py), in ``api_keys`` and ``api_key_grants``,
schema version 2 of the ``keys`` component (:mod:`facelens.database`; 2: grants bound to collection
generations, as in the file since its migration). Only the sha256 of a token is stored. Every request
reads its key afresh (one indexed lookup, READ COMMITTED): a key revoked through one server is refused
by every other from its next request on. A revoked key's row stays (its id is named by the signed log).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..database import DatabaseError, connect, migrate, redact
from .keys import KEYS_SCHEMA_VERSION, GrantRow, KeyRow, _key_row

__all__ = ["PgKeyTables"]

logger = logging.getLogger(__name__)

COMPONENT = "keys"
_STEPS: dict[int, list[str]] = {  # version -> the statements that reach it (numbered as the SQLite file's)
    KEYS_SCHEMA_VERSION: [
        "CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, name TEXT NOT NULL, token_sha256 TEXT NOT NULL, "
        "admin BOOLEAN NOT NULL, created TEXT NOT NULL, "
        "revoked TEXT)",  # time of revocation, NULL while the key is valid
        "CREATE TABLE api_key_grants (key_id TEXT NOT NULL REFERENCES api_keys (key_id), collection TEXT NOT NULL, "
        "scope TEXT NOT NULL, generation TEXT NOT NULL, PRIMARY KEY (key_id, collection, scope))",
    ],
}


class PgKeyTables:
    """The keys in the PostgreSQL database at ``url`` (:class:`facelens.server.keys.KeyTables`), made on
    first use. One connection, guarded by a lock, reopened after it breaks; errors are DatabaseError
    (503: the service cannot check keys now)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._error = psycopg.Error
        self.url = url
        self.location = redact(url)
        self._lock = threading.Lock()
        self._conn: Any = None
        with self._lock:
            try:
                migrate(self._connection(), COMPONENT, _STEPS, url=url)
            except psycopg.Error as exc:
                raise DatabaseError(f"{self.location}: cannot open the key tables: {str(exc).strip()}") from None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                logger.warning("%s: the key store's connection was lost; reconnecting", self.location)
            self._conn = connect(self.url)
        return self._conn

    def _fail(self, exc: Exception) -> DatabaseError:
        return DatabaseError(f"{self.location}: the key tables cannot be used: {str(exc).strip()}")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def insert(self, row: KeyRow, token_sha256: str, grants: Sequence[GrantRow],
               record: Callable[[], None]) -> bool:
        key_id, name, admin, created, _ = row
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    cur = conn.execute("INSERT INTO api_keys (key_id, name, token_sha256, admin, created, revoked) "
                                       "VALUES (%s, %s, %s, %s, %s, NULL) ON CONFLICT (key_id) DO NOTHING",
                                       (key_id, name, token_sha256, admin, created))
                    if cur.rowcount != 1:
                        return False
                    with conn.cursor() as c:
                        c.executemany("INSERT INTO api_key_grants (key_id, collection, scope, generation) "
                                      "VALUES (%s, %s, %s, %s)", [(key_id, col, s, g) for col, s, g in grants])
                    record()  # in the transaction: no key without its record
            except self._error as exc:
                raise self._fail(exc) from None
        return True

    def revoke(self, key_id: str, when: str, record: Callable[[str], None]) -> tuple[KeyRow | None, bool]:
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    cur = conn.execute("UPDATE api_keys SET revoked = %s WHERE key_id = %s AND revoked IS NULL",
                                       (when, key_id))
                    row = conn.execute("SELECT key_id, name, admin, created, revoked FROM api_keys WHERE key_id = %s",
                                       (key_id,)).fetchone()
                    if cur.rowcount == 1:
                        record(row[1])
            except self._error as exc:
                raise self._fail(exc) from None
        return (_key_row(row) if row is not None else None), cur.rowcount == 1

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """A read, tried again once on a new connection when the old one turns out dead (a database
        restart, an idle connection dropped by a proxy): reads are safe to repeat, writes are not."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    return list(self._connection().execute(sql, params).fetchall())
                except self._error as exc:
                    if attempt == 2 or not self._conn.broken:
                        raise self._fail(exc) from None
            raise AssertionError("unreachable")

    def find(self, key_id: str) -> tuple[KeyRow, str] | None:
        rows = self._query("SELECT key_id, name, admin, created, revoked, token_sha256 FROM api_keys "
                           "WHERE key_id = %s", (key_id,))
        return None if not rows else (_key_row(rows[0][:5]), str(rows[0][5]))

    def all(self) -> list[KeyRow]:
        return [_key_row(r) for r in self._query("SELECT key_id, name, admin, created, revoked FROM api_keys "
                                                  "ORDER BY created, key_id")]

    def grants(self, key_id: str) -> list[GrantRow]:
        rows = self._query("SELECT collection, scope, generation FROM api_key_grants WHERE key_id = %s", (key_id,))
        return [(str(c), str(s), str(g)) for c, s, g in rows]

    def active_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM api_keys WHERE revoked IS NULL")[0][0])
