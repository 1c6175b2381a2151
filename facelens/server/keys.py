"""API keys: created and revoked with ``facelens keys``, checked by the service on every request.

A key is ``fl_<key id>_<secret>``: the 12-hex-digit key id is public (the search log records it), the
secret is 32 random bytes. Only the sha256 of the whole token is stored, so the key file does not hold
usable keys. A fast hash is right here, and bcrypt/scrypt/argon2 are not needed: those slow down
guessing of *low-entropy passwords*; a 256-bit random secret cannot be guessed at any hash speed, and a
deliberately slow hash would cost every request tens of milliseconds of CPU, a lever for denial of
service. The hashes are compared in constant time.

Each key holds either global admin rights or per-collection grants of the scopes ``admin`` (everything
on that collection, including erasure and deleting it), ``index`` (add faces and persons, associate),
``search`` (search, logged), ``read`` (list faces and persons, see face crops) and ``review`` (confirm or
reject the leads of investigations: docs/identification.md, "Review"). A key with no grant on a collection
cannot tell it from one that does not exist.

A grant names a collection *and its generation* (``facelens.store.collection_generation``: a new
identity each time a collection of that name is created). A grant can only be made for a collection
that exists, and it gives access only while that same collection exists: once it is deleted the grant
is dead, and a new collection that reuses the name is invisible to the key (404, word for word as for a
missing collection). Checking this on every request costs a ``stat`` of the collection's database
file: the generation read from it is cached until the file changes (see :class:`GenerationCache`).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..accountability.actor import Actor
from ..config import database_url
from ..database import DatabaseError, is_database_url
from ..errors import CollectionNotFoundError, InvalidArgumentError
from ..store.home import collection_dir, collection_generation, service_dir, validate_collection_name
from .errors import ApiError, ServiceError

__all__ = ["ApiKey", "GenerationCache", "KeyStore", "KeyTables", "NewKey", "Scope", "SqliteKeyTables", "service_dir"]

logger = logging.getLogger(__name__)

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
    generation TEXT NOT NULL,          -- the collection's generation when granted; '' for a grant that
                                       -- never had one (its collection was missing when key files were migrated)
    PRIMARY KEY (key_id, collection, scope)
);
"""

# The key tables' schema version, the same number on both storages: the SQLite file's ``PRAGMA user_version``
# (0 in files from before it was recorded) and the ``keys`` row of PostgreSQL's ``facelens_schema``. 2: grants
# bound to collection generations.
KEYS_SCHEMA_VERSION = 2

# A generation read from a database file whose status changed less than this long before the read is
# not cached: file times have a coarse granularity (a few ms on Linux), so a collection deleted and
# created again within one tick could otherwise look unchanged to ``stat``.
_SETTLE_NS = 1_000_000_000

GenerationOf = Callable[[str], str | None]


class Scope(enum.StrEnum):
    """What a key may do on a collection. ``admin`` includes the others. ``review``: list, show and decide the
    review items of every investigation of the collection (a ``search`` key sees only its own searches'
    items, and decides none)."""

    ADMIN = "admin"
    INDEX = "index"
    SEARCH = "search"
    READ = "read"
    REVIEW = "review"


ALL_SCOPES = frozenset(Scope)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class GenerationCache:
    """The current generation of each collection of a home, as :func:`collection_generation` reads it,
    cached per collection until its database file changes.

    A hit costs one ``os.stat``: the cached value is used while the file's (device, inode, size, mtime,
    ctime) are those seen when it was read. A deleted collection has no file (None); one created again
    under the name is a new file with a later ctime. Values read from a file changed within the last
    second are not cached (file times are coarse), so two collections created in the same clock tick
    cannot be confused. Thread-safe.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, ...], str]] = {}
        self._paths: dict[str, str] = {}  # name -> its database file (pathlib costs more than the stat)

    @staticmethod
    def _signature(st: os.stat_result) -> tuple[int, ...]:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def __call__(self, collection: str) -> str | None:
        """The generation of the collection named ``collection`` now, or None when there is none."""
        try:
            db = self._paths.get(collection)
            if db is None:
                db = str(collection_dir(self.home, collection) / "faces.sqlite")
                if len(self._paths) < 100_000:
                    self._paths[collection] = db
            st = os.stat(db)
        except (OSError, InvalidArgumentError):
            with self._lock:
                self._cache.pop(collection, None)
            return None
        signature = self._signature(st)
        with self._lock:
            hit = self._cache.get(collection)
        if hit is not None and hit[0] == signature:
            return hit[1]
        try:
            generation = collection_generation(self.home, collection)
        except CollectionNotFoundError:
            return None
        try:
            after = self._signature(os.stat(db))
        except OSError:
            return None
        with self._lock:
            if after == signature and st.st_ctime_ns < time.time_ns() - _SETTLE_NS:
                self._cache[collection] = (signature, generation)
            else:
                self._cache.pop(collection, None)
        return generation


def _fail_closed(collection: str) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as stored (never its secret): global ``admin``, or ``grants`` of scopes per collection.

    ``generations`` holds the generation each grant is bound to; ``current_generation`` says what the
    generation of a collection is now (None: no such collection). A grant whose generation is not the
    current one is *dead*: it gives nothing. A key built without ``current_generation`` has no live
    grant (fail closed); keys from a :class:`KeyStore` always have it.
    """

    key_id: str
    name: str
    admin: bool
    grants: Mapping[str, frozenset[Scope]] = field(default_factory=dict)
    created: str = ""
    revoked: str | None = None
    generations: Mapping[str, str] = field(default_factory=dict)
    current_generation: GenerationOf = field(default=_fail_closed, compare=False, repr=False)

    def live(self, collection: str) -> bool:
        """Whether this key's grant on ``collection`` names the collection of that name that exists now."""
        bound = self.generations.get(collection)
        return bool(bound) and collection in self.grants and self.current_generation(collection) == bound

    def scopes(self, collection: str) -> frozenset[Scope]:
        """The scopes this key has on ``collection`` now (empty: the collection is invisible to it)."""
        if self.admin:
            return ALL_SCOPES
        granted = self.grants.get(collection)
        if not granted or not self.live(collection):
            return frozenset()
        return ALL_SCOPES if Scope.ADMIN in granted else granted

    def dead_grants(self) -> list[str]:
        """The collections this key was granted whose collection was deleted (or re-created) since."""
        return sorted(c for c in self.grants if not self.live(c))

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "name": self.name, "admin": self.admin,
                "grants": {c: sorted(s) for c, s in sorted(self.grants.items())},
                "generations": dict(sorted(self.generations.items())), "dead_grants": self.dead_grants(),
                "created": self.created, "revoked": self.revoked}


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created: ``token`` is the secret, shown once and stored nowhere."""

    key: ApiKey
    token: str


def _by(actor: Actor | None) -> dict[str, Any]:
    """The fields every record has (as ``Engine.record`` writes them): who acted, no collection, no purpose."""
    return {"actor": actor.to_dict() if actor is not None else None,
            "key_id": actor.id if actor is not None and actor.kind == "key" else None,
            "collection": None, "purpose": None}


class ActionLog(Protocol):
    """Where state-changing actions are recorded (the search log: ``SearchLog.append``)."""

    def append(self, record: Mapping[str, Any]) -> Any: ...


KeyRow = tuple[str, str, bool, str, "str | None"]
"""A key as its table holds it: (key_id, name, admin, created, revoked or None)."""
GrantRow = tuple[str, str, str]
"""One grant of a key: (collection, scope, generation)."""


class KeyTables(Protocol):
    """Where a :class:`KeyStore` keeps its keys: a SQLite file (:class:`SqliteKeyTables`) or a PostgreSQL
    database (:class:`facelens.server.keys_pg.PgKeyTables`). Each operation is one transaction; ``record``
    callbacks run inside it, before the commit, so that a key is not created (or revoked) when its record
    in the log cannot be written."""

    location: str

    def insert(self, row: KeyRow, token_sha256: str, grants: Sequence[GrantRow],
               record: Callable[[], None]) -> bool:
        """Store a new key and its grants; False (nothing stored) when ``row``'s key_id is taken."""
        ...

    def revoke(self, key_id: str, when: str, record: Callable[[str], None]) -> tuple[KeyRow | None, bool]:
        """Mark the key revoked at ``when`` unless it already is: (the key after, whether this revoked it);
        ``record(name)`` runs when it did."""
        ...

    def find(self, key_id: str) -> tuple[KeyRow, str] | None:
        """The key with this id and its token's sha256, else None."""
        ...

    def all(self) -> list[KeyRow]:
        """Every key, revoked ones included, oldest first."""
        ...

    def grants(self, key_id: str) -> list[GrantRow]: ...
    def active_count(self) -> int: ...
    def close(self) -> None: ...


class SqliteKeyTables:
    """The keys in a SQLite file (``<home>/service/keys.sqlite``, mode 0600): the embedded default.
    ``generations`` binds the grants of a file from before generations when it is first opened."""

    def __init__(self, path: Path, generations: GenerationOf) -> None:
        self.path = path
        self.location = str(path)
        self._generations = generations
        fresh = not path.exists()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            self._migrate()
        if fresh:
            os.chmod(path, 0o600)

    def _migrate(self) -> None:
        """Bind the grants of a key file from before generations to the collections that exist now; a
        grant on a name with no collection is dead (it was made in advance, or outlived its collection)."""
        self._conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others then see the column
        try:
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version > KEYS_SCHEMA_VERSION:
                raise ServiceError(f"{self.path}: the key file's schema is version {version}, newer than this "
                                   f"facelens knows ({KEYS_SCHEMA_VERSION}): upgrade facelens")
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(grants)")}
            if "generation" not in columns:
                self._conn.execute("ALTER TABLE grants ADD COLUMN generation TEXT NOT NULL DEFAULT ''")
                names = [r[0] for r in self._conn.execute("SELECT DISTINCT collection FROM grants")]
                for name in names:
                    current = self._generations(name)
                    if current is None:
                        logger.warning("%s: the grants on %r are dead: no collection has that name", self.path, name)
                    self._conn.execute("UPDATE grants SET generation = ? WHERE collection = ?", (current or "", name))
            if version < KEYS_SCHEMA_VERSION:
                self._conn.execute(f"PRAGMA user_version = {KEYS_SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def insert(self, row: KeyRow, token_sha256: str, grants: Sequence[GrantRow],
               record: Callable[[], None]) -> bool:
        key_id, name, admin, created, _ = row
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if self._conn.execute("SELECT 1 FROM keys WHERE key_id = ?", (key_id,)).fetchone() is not None:
                    self._conn.execute("ROLLBACK")
                    return False
                self._conn.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?, NULL)",
                                   (key_id, name, token_sha256, int(admin), created))
                self._conn.executemany("INSERT INTO grants (key_id, collection, scope, generation) VALUES (?, ?, ?, ?)",
                                       [(key_id, c, s, g) for c, s, g in grants])
                record()
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return True

    def revoke(self, key_id: str, when: str, record: Callable[[str], None]) -> tuple[KeyRow | None, bool]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cur = self._conn.execute("UPDATE keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL",
                                         (when, key_id))
                row = self._conn.execute("SELECT key_id, name, admin, created, revoked FROM keys WHERE key_id = ?",
                                         (key_id,)).fetchone()
                if cur.rowcount == 1:
                    record(row[1])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return (_key_row(row) if row is not None else None), cur.rowcount == 1

    def find(self, key_id: str) -> tuple[KeyRow, str] | None:
        with self._lock:
            row = self._conn.execute("SELECT key_id, name, admin, created, revoked, token_sha256 FROM keys "
                                     "WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else (_key_row(row[:5]), str(row[5]))

    def all(self) -> list[KeyRow]:
        with self._lock:
            rows = self._conn.execute("SELECT key_id, name, admin, created, revoked FROM keys "
                                      "ORDER BY created, key_id").fetchall()
        return [_key_row(r) for r in rows]

    def grants(self, key_id: str) -> list[GrantRow]:
        with self._lock:
            rows = self._conn.execute("SELECT collection, scope, generation FROM grants WHERE key_id = ?",
                                      (key_id,)).fetchall()
        return [(str(c), str(s), str(g)) for c, s, g in rows]

    def active_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM keys WHERE revoked IS NULL").fetchone()[0])


def _key_row(row: Sequence[Any]) -> KeyRow:
    return (str(row[0]), str(row[1]), bool(row[2]), str(row[3]), None if row[4] is None else str(row[4]))


class KeyStore:
    """The API keys of one facelens home, whose collections the grants name. Thread-safe. ``path``: the
    SQLite file (``<home>/service/keys.sqlite``; ``home`` defaults to the folder above ``service/``) or
    a ``postgresql://`` URL (``home`` then required: keys shared by every server of the database).

    With an ``action_log``, creating and revoking a key is recorded there (``key_created``,
    ``key_revoked``) inside the key table's transaction: if the record cannot be written, the key is not
    created (or not revoked) either.
    """

    def __init__(self, path: Path | str, *, home: Path | None = None, action_log: ActionLog | None = None) -> None:
        self.path = path
        self.action_log = action_log
        self.tables: KeyTables
        if is_database_url(path):
            if home is None:
                raise InvalidArgumentError("a key store in a database needs the home whose collections it grants")
            self.home = home
            self.generations = GenerationCache(self.home)
            from .keys_pg import PgKeyTables

            self.tables = PgKeyTables(str(path))
        else:
            self.home = home if home is not None else Path(path).parent.parent
            self.generations = GenerationCache(self.home)
            self.tables = SqliteKeyTables(Path(path), self.generations)

    @property
    def location(self) -> str:
        """Where the keys are, for messages: the file, or the database's URL without its password."""
        return self.tables.location

    @classmethod
    def open(cls, home: Path, *, action_log: ActionLog | None = None, database: str | None = None) -> KeyStore:
        """The keys of ``home``: in its database (``database``, else ``$FACELENS_DATABASE``, else the home's
        ``facelens.toml``: :func:`facelens.config.database_url`), else in ``<home>/service/keys.sqlite``."""
        home = Path(home).expanduser()
        url = database_url(home, database)
        return cls(url if url is not None else service_dir(home) / "keys.sqlite", home=home, action_log=action_log)

    def close(self) -> None:
        self.tables.close()

    def create(self, *, name: str, admin: bool = False,
               grants: Mapping[str, Iterable[Scope | str]] | None = None, actor: Actor | None = None) -> NewKey:
        """Create a key; its token is returned once and only its sha256 is kept. Each granted collection
        must exist (CollectionNotFoundError otherwise): the grant is bound to its current generation.
        ``actor``: who creates it (the admin running ``facelens keys create``), named in the record."""
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
        generations: dict[str, str] = {}
        for collection in clean:
            current = self.generations(collection)
            if current is None:
                raise CollectionNotFoundError(
                    f"no collection named {collection!r} in {self.home}: create it first; a grant is bound to the "
                    f"collection that exists when the key is made, and ends when that collection is deleted")
            generations[collection] = current
        rows = [(c, s.value, generations[c]) for c, ss in clean.items() for s in ss]
        while True:
            key_id = secrets.token_hex(_ID_HEX // 2)
            token = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            created = _now()

            def record(key_id: str = key_id) -> None:
                if self.action_log is not None:
                    self.action_log.append({**_by(actor), "action": "key_created", "subject": {
                        "key_id": key_id, "name": name, "admin": admin,
                        "grants": {c: {"scopes": sorted(ss), "generation": generations[c]}
                                   for c, ss in sorted(clean.items())}}})

            if self.tables.insert((key_id, name, admin, created, None), _digest(token), rows, record):
                break
        return NewKey(ApiKey(key_id=key_id, name=name, admin=admin, grants=clean, created=created,
                             generations=generations, current_generation=self.generations), token)

    def _key(self, row: KeyRow) -> ApiKey:
        key_id, name, admin, created, revoked = row
        grants: dict[str, set[Scope]] = {}
        generations: dict[str, str] = {}
        for collection, scope, generation in self.tables.grants(key_id):
            grants.setdefault(collection, set()).add(Scope(scope))
            # one generation per collection and key (rows that disagreed would make the grant dead)
            generations[collection] = generation if generations.get(collection, generation) == generation else ""
        return ApiKey(key_id=key_id, name=name, admin=bool(admin), created=created, revoked=revoked,
                      grants={c: frozenset(s) for c, s in grants.items()}, generations=generations,
                      current_generation=self.generations)

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        return [self._key(r) for r in self.tables.all()]

    def active_count(self) -> int:
        return self.tables.active_count()

    def revoke(self, key_id: str, *, actor: Actor | None = None) -> ApiKey:
        """Revoke a key; the service refuses it from its next request on. Raises for an unknown id.
        ``actor``: who revokes it, named in the record."""

        def record(name: str) -> None:
            if self.action_log is not None:
                self.action_log.append({**_by(actor), "action": "key_revoked",
                                        "subject": {"key_id": key_id, "name": name}})

        row, revoked = self.tables.revoke(key_id, _now(), record)
        if row is None:
            raise ServiceError(f"no key with id {key_id!r}")
        if not revoked:
            raise ServiceError(f"key {key_id!r} was already revoked on {row[4]}")
        return self._key(row)

    def authenticate(self, token: str) -> ApiKey | None:
        """The valid (unrevoked) key whose token this is, else None. Reads the key table on every call, so
        a key revoked by another process (or another server of the database) stops working at once."""
        if not token.startswith(_PREFIX) or len(token) < len(_PREFIX) + _ID_HEX + 2 or len(token) > 200:
            return None
        try:
            found = self.tables.find(token[len(_PREFIX): len(_PREFIX) + _ID_HEX])
            if found is None or not hmac.compare_digest(found[1], _digest(token)) or found[0][4] is not None:
                return None
            return self._key(found[0])
        except DatabaseError as exc:  # refused before any route runs: answered 503 by the request guard
            raise ApiError(503, exc.code, str(exc)) from None

    def get(self, key_id: str) -> ApiKey | None:
        """The valid (unrevoked) key with this id, else None; read from the key table on every call (the
        console's sessions name their key by id and look it up on each request, so revocation ends them)."""
        try:
            found = self.tables.find(key_id)
            if found is None or found[0][4] is not None:
                return None
            return self._key(found[0])
        except DatabaseError as exc:
            raise ApiError(503, exc.code, str(exc)) from None
