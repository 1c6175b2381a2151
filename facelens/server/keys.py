"""API keys: created and revoked with ``facelens keys``, checked by the service on every request.

A key is ``fl_<key id>_<secret>``: the 12-hex-digit key id is public (the search log records it), the
secret is 32 random bytes. Only the sha256 of the whole token is stored, so the key file does not hold
usable keys. A fast hash is right here, and bcrypt/scrypt/argon2 are not needed: those slow down
guessing of *low-entropy passwords*; a 256-bit random secret cannot be guessed at any hash speed, and a
deliberately slow hash would cost every request tens of milliseconds of CPU, a lever for denial of
service. The hashes are compared in constant time.

Each key holds either global admin rights or per-collection grants of the scopes ``admin`` (everything
on that collection, including erasure and deleting it), ``index`` (add faces and persons, associate),
``search`` (search, logged) and ``read`` (list faces and persons). A key with no grant on a collection
cannot tell it from one that does not exist.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..store.home import validate_collection_name
from .errors import ServiceError

__all__ = ["ApiKey", "KeyStore", "NewKey", "Scope", "service_dir"]

_PREFIX = "fl_"
_ID_HEX = 12

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    admin INTEGER NOT NULL,
    created TEXT NOT NULL,
    revoked TEXT                       -- time of revocation, NULL while the key is valid
);
CREATE TABLE IF NOT EXISTS grants (
    key_id TEXT NOT NULL REFERENCES keys (key_id),
    collection TEXT NOT NULL,
    scope TEXT NOT NULL,
    PRIMARY KEY (key_id, collection, scope)
);
"""


class Scope(enum.StrEnum):
    """What a key may do on a collection. ``admin`` includes the others."""

    ADMIN = "admin"
    INDEX = "index"
    SEARCH = "search"
    READ = "read"


ALL_SCOPES = frozenset(Scope)


def service_dir(home: Path) -> Path:
    """The folder under a facelens home holding the service's key file and search log (mode 0700)."""
    path = Path(home).expanduser() / "service"
    path.mkdir(parents=True, exist_ok=True)
    try:
        path.chmod(0o700)
    except OSError:  # pragma: no cover - a file system without modes
        pass
    return path


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as stored (never its secret): global ``admin``, or ``grants`` of scopes per collection."""

    key_id: str
    name: str
    admin: bool
    grants: Mapping[str, frozenset[Scope]] = field(default_factory=dict)
    created: str = ""
    revoked: str | None = None

    def scopes(self, collection: str) -> frozenset[Scope]:
        """The scopes this key has on ``collection`` (empty: the collection is invisible to it)."""
        if self.admin:
            return ALL_SCOPES
        granted = self.grants.get(collection, frozenset())
        return ALL_SCOPES if Scope.ADMIN in granted else granted

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "name": self.name, "admin": self.admin,
                "grants": {c: sorted(s) for c, s in sorted(self.grants.items())},
                "created": self.created, "revoked": self.revoked}


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created: ``token`` is the secret, shown once and stored nowhere."""

    key: ApiKey
    token: str


class KeyStore:
    """The API keys of one facelens home (``<home>/service/keys.sqlite``). Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fresh = not path.exists()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        if fresh:
            os.chmod(path, 0o600)

    @classmethod
    def open(cls, home: Path) -> KeyStore:
        return cls(service_dir(home) / "keys.sqlite")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def create(self, *, name: str, admin: bool = False,
               grants: Mapping[str, Iterable[Scope | str]] | None = None) -> NewKey:
        """Create a key; its token is returned once and only its sha256 is kept."""
        clean: dict[str, frozenset[Scope]] = {}
        for collection, scopes in (grants or {}).items():
            validate_collection_name(collection)
            try:
                parsed = frozenset(Scope(str(s).lower()) for s in scopes)
            except ValueError as exc:
                raise InvalidArgumentError(f"unknown scope ({exc}); use {', '.join(s.value for s in Scope)}") from None
            if not parsed:
                raise InvalidArgumentError(f"collection {collection!r} needs at least one scope")
            clean[collection] = parsed
        if not admin and not clean:
            raise InvalidArgumentError("a key needs --admin or at least one --collection with --scope")
        if admin and clean:
            raise InvalidArgumentError("an --admin key already has every scope on every collection; drop --collection")
        if not name or len(name) > 200 or not name.isprintable():
            raise InvalidArgumentError("a key name must be 1-200 printable characters")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                while True:
                    key_id = secrets.token_hex(_ID_HEX // 2)
                    if self._conn.execute("SELECT 1 FROM keys WHERE key_id = ?", (key_id,)).fetchone() is None:
                        break
                token = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
                created = _now()
                self._conn.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?, NULL)",
                                   (key_id, name, _digest(token), int(admin), created))
                self._conn.executemany("INSERT INTO grants VALUES (?, ?, ?)",
                                       [(key_id, c, s.value) for c, ss in clean.items() for s in ss])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return NewKey(ApiKey(key_id=key_id, name=name, admin=admin, grants=clean, created=created), token)

    def _key(self, row: tuple[Any, ...]) -> ApiKey:
        key_id, name, admin, created, revoked = row
        grants: dict[str, set[Scope]] = {}
        for collection, scope in self._conn.execute("SELECT collection, scope FROM grants WHERE key_id = ?",
                                                    (key_id,)):
            grants.setdefault(collection, set()).add(Scope(scope))
        return ApiKey(key_id=key_id, name=name, admin=bool(admin), created=created, revoked=revoked,
                      grants={c: frozenset(s) for c, s in grants.items()})

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT key_id, name, admin, created, revoked FROM keys "
                                      "ORDER BY created, key_id").fetchall()
            return [self._key(r) for r in rows]

    def active_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM keys WHERE revoked IS NULL").fetchone()[0])

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key; the service refuses it from its next request on. Raises for an unknown id."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cur = self._conn.execute("UPDATE keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL",
                                         (_now(), key_id))
                row = self._conn.execute("SELECT key_id, name, admin, created, revoked FROM keys WHERE key_id = ?",
                                         (key_id,)).fetchone()
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            if row is None:
                raise ServiceError(f"no key with id {key_id!r}")
            if cur.rowcount == 0:
                raise ServiceError(f"key {key_id!r} was already revoked on {row[4]}")
            return self._key(row)

    def authenticate(self, token: str) -> ApiKey | None:
        """The valid (unrevoked) key whose token this is, else None. Reads the file on every call, so a
        key revoked by another process stops working at once."""
        if not token.startswith(_PREFIX) or len(token) < len(_PREFIX) + _ID_HEX + 2 or len(token) > 200:
            return None
        key_id = token[len(_PREFIX): len(_PREFIX) + _ID_HEX]
        with self._lock:
            row = self._conn.execute("SELECT key_id, name, admin, created, revoked, token_sha256 FROM keys "
                                     "WHERE key_id = ?", (key_id,)).fetchone()
            if row is None or not hmac.compare_digest(row[5], _digest(token)) or row[4] is not None:
                return None
            return self._key(row[:5])
