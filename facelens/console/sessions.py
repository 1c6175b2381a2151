"""Console sign-in sessions: a random token in an HttpOnly cookie, its sha256 in
``<home>/service/console-sessions.sqlite``.

A session names the API key it was opened with (by key id, never the key itself) and carries its own
CSRF token. Every request looks the key up again in the key store, so a revoked key ends its sessions at
once, and several ``serve --processes`` workers share the sessions through the file. Only the sha256 of a
session token is stored: the file does not hold usable cookies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..server.keys import service_dir

__all__ = ["SESSION_HOURS", "ConsoleSession", "SessionStore"]

logger = logging.getLogger(__name__)

#: A session ends this long after sign-in, whatever is done with it (sign in again afterwards).
SESSION_HOURS = 8.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created TEXT NOT NULL,
    expires REAL NOT NULL              -- unix time
);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);
"""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in browser: the key it acts with (``key_id``) and the CSRF token its forms must carry."""

    key_id: str
    csrf: str
    expires: float

    def csrf_ok(self, given: str | None) -> bool:
        """Whether a form's ``csrf_token`` is this session's (compared in constant time)."""
        return bool(given) and hmac.compare_digest(self.csrf.encode(), str(given).encode())


class SessionStore:
    """The console sessions of one facelens home. Each call opens its own short connection, so the
    store is safe to share between threads and processes."""

    def __init__(self, path: Path, *, hours: float = SESSION_HOURS) -> None:
        self.path = path
        self.hours = hours
        fresh = not path.exists()
        with self._connect() as conn:
            conn.executescript(_SCHEMA)
        if fresh:
            os.chmod(path, 0o600)

    @classmethod
    def open(cls, home: Path) -> SessionStore:
        return cls(service_dir(home) / "console-sessions.sqlite")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def create(self, key_id: str, *, now: float | None = None) -> tuple[str, ConsoleSession]:
        """A new session for ``key_id``: (cookie token, session). Expired sessions are removed here."""
        now = dt.datetime.now(dt.UTC).timestamp() if now is None else now
        token = secrets.token_urlsafe(32)
        session = ConsoleSession(key_id=key_id, csrf=secrets.token_urlsafe(32), expires=now + self.hours * 3600)
        conn = self._connect()
        try:
            with conn:
                conn.execute("DELETE FROM sessions WHERE expires < ?", (now,))
                conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                             (_digest(token), key_id, session.csrf,
                              dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"), session.expires))
        finally:
            conn.close()
        return token, session

    def get(self, token: str | None, *, now: float | None = None) -> ConsoleSession | None:
        """The live session of a cookie token, or None (unknown, expired, or signed out)."""
        if not token or len(token) > 100:
            return None
        now = dt.datetime.now(dt.UTC).timestamp() if now is None else now
        conn = self._connect()
        try:
            row = conn.execute("SELECT key_id, csrf, expires FROM sessions WHERE token_sha256 = ?",
                               (_digest(token),)).fetchone()
        finally:
            conn.close()
        if row is None or float(row[2]) < now:
            return None
        return ConsoleSession(key_id=str(row[0]), csrf=str(row[1]), expires=float(row[2]))

    def end(self, token: str | None) -> None:
        """Sign out: the cookie token no longer opens anything."""
        if not token:
            return
        conn = self._connect()
        try:
            with conn:
                conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_digest(token),))
        finally:
            conn.close()
