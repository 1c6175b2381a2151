"""The signed log: an append-only, hash-chained, signed record of every search and compare the service ran.

Each entry is a JSON object: what was done (``action``), by which key (its public id, never the
secret), for what ``purpose``, on which collection of which size, with which probe (the sha256 of the
image, or a stored face id), at which operating point (``max_fmr`` and its score ``threshold``), and the
candidates returned (face ids, person ids, scores, false-match rates). Never an image, an embedding or
a face box. Each entry also holds ``seq`` (1, 2, 3, ...), ``time`` (UTC), ``prev_hash`` (the hash of
the entry before it; 64 zeros for the first) and ``signer`` (the fingerprint of the key that signs
it); its own ``hash`` is the sha256 of its canonical JSON (keys sorted, no spaces, UTF-8), and its
``sig`` an Ed25519 signature of that hash by the service's signing key. A ``head`` row holds the last
entry's seq and hash, written in the same transaction as the entry. The record API is generic
(:meth:`SearchLog.append` takes any JSON object with an ``action``), so other state-changing actions
can be logged the same way.

Why SQLite rather than a JSON-lines file: an entry and the head move together in one transaction, so a
crash leaves no torn line and no head that disagrees with the entries; concurrent writers (threads, or
several processes) are serialised by the database; the admin endpoint pages by seq and ``export
--since`` seeks by time through an index. ``facelens log export`` writes JSON lines for anyone who
wants a plain file, and such a file can be verified on its own.

Where the entries are stored is behind :class:`LogStorage`: :class:`SqliteLogStorage` (the file, the
embedded default) or, when the home names a PostgreSQL database (``FACELENS_DATABASE``,
:func:`facelens.config.database_url`), :class:`facelens.accountability.log_pg.PgLogStorage`: the same
entries, one chain shared by several servers on several hosts, append-only triggers, signing unchanged.
:func:`verify_log`, :func:`read_entries` and :func:`make_checkpoint` take either a file or a
``postgresql://`` URL (:func:`log_location` says which a home uses).

The signing key is a file outside the log (``<home>/service/log-signing.key``, mode 0600, created on
first use; ``FACELENS_LOG_SIGNING_KEY`` or ``--signing-key`` put it elsewhere); its public key
(``log-signing.pub`` beside it, ``facelens log public-key``) lets anyone check the log without being
able to write it. What :func:`verify_log` detects, read-only: an entry edited (its hash no longer
matches its content), edited and re-hashed, even with the whole chain after it re-hashed consistently
(its signature no longer verifies: whoever rewrote it lacked the key), deleted or inserted in the middle
(a seq gap or a broken ``prev_hash`` link), reordered, signatures stripped, entries removed from the end
while the head still names them, a checkpoint or anchor no longer in the log (truncated or replaced),
the append-only triggers dropped, an empty or 0-byte file. What it cannot detect on its own: whoever
holds the signing key can write new entries and re-sign a rewritten log; and a log cut at its end
together with its head, or deleted and started anew, looks like a shorter log. Signed checkpoints
(:func:`make_checkpoint`, ``facelens log checkpoint``) copied somewhere the host cannot change bound
both: ``verify --checkpoint FILE`` proves everything up to the checkpoint's entry is unchanged.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..config import database_url
from ..database import is_database_url
from ..errors import SearchLogError
from ..store.home import service_dir

__all__ = ["GENESIS", "SIGNING_KEY_ENV", "Checkpoint", "LogEntry", "LogLocation", "LogPublicKey", "LogSigningKey",
           "LogStorage", "PreparedEntry", "SearchLog", "SqliteLogStorage", "VerifyReport", "canonical_json",
           "compare_record", "default_signing_key_path", "failure", "log_location", "make_checkpoint", "read_entries",
           "search_record", "verify_entries", "verify_lines", "verify_log"]

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
LOG_VERSION = 2  # 2: entries signed (``signer`` in the body, ``sig`` beside it); 1: unsigned
# The storage's schema version, the same number on both storages: the SQLite file's ``PRAGMA user_version``
# (0 in files from before it was recorded) and the ``log`` row of PostgreSQL's ``facelens_schema``. 2: the
# ``sig`` column (signed entries).
LOG_SCHEMA_VERSION = 2
LOG_NAME = "search-log.sqlite"
SIGNING_KEY_ENV = "FACELENS_LOG_SIGNING_KEY"
CHECKPOINT_KIND = "facelens-search-log-checkpoint"
MAX_SEQ = 2**63 - 1  # SQLite's largest integer
_RESERVED = frozenset({"seq", "time", "prev_hash", "hash", "v", "sig", "signer"})
_TRIGGERS = ("entries_append_only_update", "entries_append_only_delete")
LogLocation = Path | str  # a log: its SQLite file, or the postgresql:// URL of its database
# what is signed, with a prefix per kind so that an entry's signature cannot pass for a checkpoint's
_ENTRY_DOMAIN = b"facelens search log entry\x00"
_CHECKPOINT_DOMAIN = b"facelens search log checkpoint\x00"

_TABLES = (
    # seq: 1, 2, 3, ... (the body's seq); time: the body's, for seeking; hash: sha256 of the body; body:
    # canonical JSON of the entry without its hash; sig: base64 Ed25519 signature of the hash (NULL in
    # logs from before signing)
    "CREATE TABLE entries (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, hash TEXT NOT NULL, body TEXT NOT NULL, "
    "sig TEXT)",
    "CREATE INDEX entries_time ON entries (time)",
    "CREATE TABLE head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL)",
)
_TRIGGER_SQL = {
    "entries_append_only_update": "CREATE TRIGGER entries_append_only_update BEFORE UPDATE ON entries "
                                  "BEGIN SELECT RAISE(ABORT, 'the search log is append-only'); END",
    "entries_append_only_delete": "CREATE TRIGGER entries_append_only_delete BEFORE DELETE ON entries "
                                  "BEGIN SELECT RAISE(ABORT, 'the search log is append-only'); END",
}


def canonical_json(obj: Any) -> str:
    """The one serialisation that is hashed: keys sorted, no whitespace, non-ASCII kept, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def normalise_time(value: str) -> str:
    """An ISO 8601 time (date alone: midnight; no zone: UTC) in the log's format, for comparisons."""
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise SearchLogError(f"not an ISO 8601 time: {value!r} (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).isoformat(timespec="microseconds")


# -- keys --------------------------------------------------------------------------------------------

def default_signing_key_path(home: Path) -> Path:
    """Where the log's signing key is: ``$FACELENS_LOG_SIGNING_KEY``, else ``<home>/service/log-signing.key``."""
    env = os.environ.get(SIGNING_KEY_ENV)
    return Path(env).expanduser() if env else Path(home).expanduser() / "service" / "log-signing.key"


def public_key_path(signing_key_path: Path) -> Path:
    """The public key written beside a signing key (``log-signing.pub`` for ``log-signing.key``)."""
    return signing_key_path.with_suffix(".pub")


@functools.lru_cache(maxsize=16)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True, slots=True)
class LogPublicKey:
    """An Ed25519 public key that checks the log's signatures. ``fingerprint``: the sha256 (hex) of its
    32 raw bytes, the name entries and checkpoints give their signer."""

    raw: bytes

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def pem(self) -> str:
        key = Ed25519PublicKey.from_public_bytes(self.raw)
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "public key") -> LogPublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise SearchLogError(f"{source}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SearchLogError(f"{source}: not an Ed25519 public key (`facelens log public-key` prints one)")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    @classmethod
    def load(cls, path: Path) -> LogPublicKey:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SearchLogError(f"cannot read the public key {path}: {exc.strerror or exc}") from None
        return cls.from_pem(data, source=str(path))

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            _public_key(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class LogSigningKey:
    """The service's Ed25519 key that signs log entries and checkpoints, kept in a PEM file (mode 0600)."""

    def __init__(self, private: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._private = private
        self.path = path
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key = LogPublicKey(raw)

    @classmethod
    def load(cls, path: Path) -> LogSigningKey:
        """The key in ``path``; SearchLogError if it is missing or not an Ed25519 private key."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SearchLogError(f"cannot read the log signing key {path}: {exc.strerror or exc}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise SearchLogError(f"{path}: not a PEM private key without a password ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SearchLogError(f"{path}: not an Ed25519 private key")
        return cls(key, Path(path))

    @classmethod
    def load_or_create(cls, path: Path) -> LogSigningKey:
        """The key in ``path``, made first if there is none: written to a temporary file (mode 0600) and
        linked into place, so that processes starting at once all end up with the same key. Its public
        key is written beside it (``.pub``, mode 0644) for auditors."""
        path = Path(path).expanduser()
        if path.exists():
            key = cls.load(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            private = Ed25519PrivateKey.generate()
            pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, pem)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    os.link(tmp, path)  # fails if another process made one meanwhile: use that one
                    logger.info("created the search log signing key %s", path)
                except FileExistsError:
                    pass
            except OSError as exc:
                raise SearchLogError(f"cannot create the log signing key {path}: {exc.strerror or exc}") from None
            finally:
                tmp.unlink(missing_ok=True)
            key = cls.load(path)
        pub = public_key_path(path)
        if not pub.exists():
            try:
                tmp_pub = pub.with_name(f".{pub.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                tmp_pub.write_text(key.public_key.pem())
                tmp_pub.chmod(0o644)
                os.replace(tmp_pub, pub)
            except OSError as exc:  # the key works without it; `facelens log public-key` prints it
                logger.warning("could not write the log's public key %s: %s", pub, exc)
        return key

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def _entry_message(digest: str) -> bytes:
    return _ENTRY_DOMAIN + digest.encode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        return None


# -- entries and reports -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry: ``body`` (with its seq, time, prev_hash and signer), its ``hash`` and its signature
    ``sig`` (base64; None for an entry written before the log was signed)."""

    seq: int
    hash: str
    body: Mapping[str, Any]
    sig: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.body, "hash": self.hash, **({"sig": self.sig} if self.sig is not None else {})}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement that the log's head was entry ``seq`` with ``hash`` at ``time``, by the key of
    fingerprint ``public_key``. Kept somewhere the service's host cannot change, it proves later that
    every entry up to ``seq`` is unchanged and still there."""

    seq: int
    hash: str
    time: str
    public_key: str
    signature: str

    def _message(self) -> bytes:
        claim = {"kind": CHECKPOINT_KIND, "seq": self.seq, "hash": self.hash, "time": self.time,
                 "public_key": self.public_key}
        return _CHECKPOINT_DOMAIN + canonical_json(claim).encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": CHECKPOINT_KIND, "seq": self.seq, "hash": self.hash, "time": self.time,
                "public_key": self.public_key, "signature": self.signature}

    @classmethod
    def from_dict(cls, obj: Any, *, source: str = "checkpoint") -> Checkpoint:
        try:
            if obj.get("kind") != CHECKPOINT_KIND:
                raise ValueError(f"kind is not {CHECKPOINT_KIND!r}")
            seq, digest = obj["seq"], str(obj["hash"])
            if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= MAX_SEQ or len(digest) != 64:
                raise ValueError("seq or hash out of range")
            return cls(seq=seq, hash=digest, time=str(obj["time"]), public_key=str(obj["public_key"]),
                       signature=str(obj["signature"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise SearchLogError(f"{source}: not a search log checkpoint ({exc})") from None

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SearchLogError(f"cannot read the checkpoint {path}: {exc}") from None
        return cls.from_dict(obj, source=str(path))

    def signed_by(self, key: LogPublicKey) -> bool:
        sig = _unb64(self.signature)
        return sig is not None and self.public_key == key.fingerprint and key.verify(sig, self._message())


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a verification found.

    ``status``: ``intact`` (``ok``: every entry chained and proven, by a signature of a trusted key on it
    or a later entry, or by a checkpoint or anchor at or after it), ``empty`` (no entries), ``missing``
    (no file), ``not_a_log`` (a 0-byte file, or no log tables), ``broken`` (an entry fails, or the
    append-only triggers were dropped), ``truncated`` (fewer entries than a checkpoint or the head say),
    ``unproven`` (the chain holds, but nothing trusted vouches for its last entries: unsigned, or no
    public key to check with). ``first_bad_seq`` is the first entry that fails (or the first missing
    one); ``problem`` says how; ``notes`` are facts an auditor should know even when it is intact.
    ``first_seq``..``last_seq`` are the entries read (an export may start after 1); ``signed`` and
    ``unsigned`` count them; ``public_keys`` are the fingerprints signatures were checked against.
    """

    ok: bool
    entries: int
    head_seq: int | None
    head_hash: str | None
    first_bad_seq: int | None = None
    problem: str | None = None
    status: str = "intact"
    first_seq: int | None = None
    last_seq: int | None = None
    signed: int = 0
    unsigned: int = 0
    public_keys: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "status": self.status, "entries": self.entries, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "head_seq": self.head_seq, "head_hash": self.head_hash,
                "first_bad_seq": self.first_bad_seq, "problem": self.problem, "signed": self.signed,
                "unsigned": self.unsigned, "public_keys": list(self.public_keys), "notes": list(self.notes)}


def _failed(status: str, problem: str, **kw: Any) -> VerifyReport:
    return VerifyReport(ok=False, entries=kw.pop("entries", 0), head_seq=kw.pop("head_seq", None),
                        head_hash=kw.pop("head_hash", None), status=status, problem=problem, **kw)


Row = tuple[int, str, str, "str | None"]


def verify_entries(rows: Iterable[Row], *, head: tuple[int, str] | None,
                   first_seq: int = 1, first_prev: str = GENESIS, public_keys: Sequence[LogPublicKey] | None = None,
                   anchor: tuple[int, str] | None = None, checkpoint: Checkpoint | None = None,
                   has_head: bool = True) -> VerifyReport:
    """Check a chain given as ``(row seq, body JSON, stored hash, signature or None)`` in stored order.

    ``head`` is the stored (seq, hash) of the last entry (``has_head`` False for an exported file, which
    has none). ``first_seq``/``first_prev`` say where the chain starts (an export that begins later).
    ``public_keys``: the keys whose signatures are trusted (None: signatures are not checked).
    ``anchor`` is a (seq, hash) recorded earlier, ``checkpoint`` a signed one: each must still be in
    the chain, unchanged. A checkpoint's own signature must be by one of ``public_keys``.
    """
    keys = {k.fingerprint: k for k in public_keys} if public_keys is not None else None
    fingerprints = tuple(sorted(keys)) if keys is not None else ()
    expected_seq, prev = first_seq, first_prev
    count = signed = unsigned = 0
    first_signed: int | None = None
    proven = 0  # the last seq vouched for by a trusted signature, anchor or checkpoint
    notes: list[str] = []
    points: dict[int, tuple[str, str]] = {}  # seq -> (hash, what recorded it)
    if checkpoint is not None:
        if keys is None:
            return _failed("broken", "a checkpoint is checked against the log's public key: give --public-key "
                                     "(the checkpoint's own signature must verify)", public_keys=fingerprints)
        key = keys.get(checkpoint.public_key)
        if key is None or not checkpoint.signed_by(key):
            return _failed("broken", f"the checkpoint of entry {checkpoint.seq} is not signed by the given public "
                                     f"key{'s' if len(fingerprints) > 1 else ''} "
                                     f"({', '.join(f[:16] + '...' for f in fingerprints)}): forged, edited, or "
                                     f"made with another key", public_keys=fingerprints)
        points[checkpoint.seq] = (checkpoint.hash, f"the checkpoint of {checkpoint.time}")
    if anchor is not None:
        if anchor[0] in points and points[anchor[0]][0] != anchor[1]:
            return _failed("broken", f"the anchor and the checkpoint disagree on entry {anchor[0]}")
        points.setdefault(anchor[0], (anchor[1], "the anchor"))

    def report(status: str, seq: int | None = None, problem: str | None = None) -> VerifyReport:
        last = expected_seq - 1
        return VerifyReport(ok=status == "intact", entries=count, status=status,
                            head_seq=head[0] if head else (last if count and not has_head else None),
                            head_hash=head[1] if head else (prev if count and not has_head else None),
                            first_bad_seq=seq, problem=problem, first_seq=first_seq if count else None,
                            last_seq=last if count else None, signed=signed, unsigned=unsigned,
                            public_keys=fingerprints, notes=tuple(notes))

    def bad(seq: int, problem: str) -> VerifyReport:
        return report("broken", seq, problem)

    for row_seq, text, stored_hash, sig in rows:
        try:
            body = json.loads(text)
        except ValueError:
            return bad(row_seq, f"entry {row_seq} is not valid JSON")
        if not isinstance(body, dict):
            return bad(row_seq, f"entry {row_seq} is not a JSON object")
        if row_seq != expected_seq:
            what = "missing" if row_seq > expected_seq else "out of order"
            return bad(expected_seq, f"expected entry {expected_seq}, found {row_seq}: entries {what}")
        if body.get("seq") != row_seq:
            return bad(row_seq, f"entry {row_seq} says it is entry {body.get('seq')!r}: reordered or edited")
        if body.get("prev_hash") != prev:
            return bad(row_seq, f"entry {row_seq} does not link to entry {row_seq - 1}: entry {row_seq - 1} was "
                                f"edited and re-hashed, or entries between them were deleted or inserted")
        actual = _hash(body)
        if actual != stored_hash:
            return bad(row_seq, f"entry {row_seq} was edited: its content hashes to {actual[:12]}..., "
                                f"the chain recorded {stored_hash[:12]}...")
        if sig is None:
            if first_signed is not None:
                return bad(row_seq, f"entry {row_seq} has no signature, though entry {first_signed} before it is "
                                    f"signed: its signature was stripped (every entry after a signed one is signed)")
            if "signer" in body:
                return bad(row_seq, f"entry {row_seq} names a signer but has no signature: its signature was "
                                    f"stripped")
            unsigned += 1
        else:
            first_signed = first_signed or row_seq
            if keys is not None:
                signer = str(body.get("signer"))
                key = keys.get(signer)
                if key is None:
                    return bad(row_seq, f"entry {row_seq} is signed by key {signer[:16]}..., not by the given "
                                        f"public key ({', '.join(f[:16] + '...' for f in fingerprints)}): the log "
                                        f"was re-signed with another key, or this is not its public key")
                raw = _unb64(sig)
                if raw is None or not key.verify(raw, _entry_message(actual)):
                    return bad(row_seq, f"entry {row_seq}'s signature does not verify with key {signer[:16]}...: "
                                        f"the entry (and the chain after it) was rewritten by someone without "
                                        f"the signing key")
                proven = row_seq
            signed += 1
        if row_seq in points:
            want, what = points[row_seq]
            if want != actual:
                return bad(row_seq, f"entry {row_seq} hashes to {actual[:12]}..., not {want[:12]}... as {what} "
                                    f"recorded: the log was rewritten since")
            proven = max(proven, row_seq)
        if body.get("action") == "log_triggers_restored":
            notes.append(f"entry {row_seq}: the service found the log's append-only triggers dropped "
                         f"({', '.join(body.get('triggers') or [])}) and restored them: someone wrote to the file "
                         f"outside facelens")
        prev, expected_seq = actual, row_seq + 1
        count += 1
    last_seq = expected_seq - 1
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last_seq:
            return report("truncated", last_seq + 1,
                          f"the log ends at entry {last_seq} but its head names entry {head_seq}: "
                          f"entries {last_seq + 1}-{head_seq} were removed from the end")
        if head_seq < last_seq:
            return bad(head_seq + 1, f"entries {head_seq + 1}-{last_seq} come after the head (entry {head_seq}): "
                                     f"appended outside the log's own writer")
        if count and head_hash != prev:
            return bad(last_seq, f"the head's hash {head_hash[:12]}... is not that of the last entry {last_seq}")
    elif has_head and count:
        return bad(last_seq, "the log has entries but no head: the head row was deleted")
    for seq, (_, what) in sorted(points.items()):
        if count and seq < first_seq:
            notes.append(f"{what} names entry {seq}, which is not in the file (it starts at entry {first_seq}): "
                         f"not checked")
    beyond = [(seq, what) for seq, (_, what) in sorted(points.items()) if seq > last_seq]
    if beyond:
        seq, what = beyond[0]
        ends = f"ends at entry {last_seq}" if count else "has no entries"
        return report("truncated", last_seq + 1, f"the log {ends} but {what} names entry {seq}: entries "
                                                 f"{last_seq + 1}-{seq} were removed, or the log was replaced")
    if count == 0:
        return report("empty", None, "the log has no entries. A log emptied or deleted and started anew looks "
                                     "the same: only a checkpoint kept elsewhere tells (verify --checkpoint)")
    if first_seq > 1:
        notes.append(f"the file holds entries {first_seq}..{last_seq} and does not start at entry 1: entries "
                     f"before {first_seq} are not in it (its first entry's prev_hash names entry {first_seq - 1})")
    if unsigned:
        notes.append(f"entries {first_seq}..{first_seq + unsigned - 1} are unsigned (written before the log was "
                     f"signed)" + (f"; the signature of entry {first_signed} covers them through the chain"
                                   if first_signed is not None and keys is not None else ""))
    if not has_head:
        notes.append("a file has no head: entries cut from its end are noticed only against a checkpoint")
    if proven < last_seq:
        if keys is None:
            why = ("signatures not checked: no public key (give --public-key, as printed by "
                   "`facelens log public-key`)")
        else:
            why = (f"entries {proven + 1}..{last_seq} are unsigned and no signed entry or checkpoint follows them: "
                   f"the chain holds, but anyone who can write the file could have rewritten it")
        return report("unproven", proven + 1, why)
    return report("intact")


# -- reading -----------------------------------------------------------------------------------------

def _ro_connect(path: Path) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``): it never writes the file, and never runs the schema. SQLite
    may create the ``-wal``/``-shm`` side files of a WAL database; where the folder is not writable,
    the file is opened as immutable instead."""
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=30.0)
    return conn


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}


def read_entries(path: LogLocation, *, since: str | None = None, after_seq: int = 0) -> Iterator[LogEntry]:
    """Every entry of the log ``path`` (a file, or a ``postgresql://`` URL) from ``since`` (ISO 8601) and
    after ``after_seq``, in order, read-only, a page at a time. Raises SearchLogError for a missing log
    or one that is not a log."""
    if is_database_url(path):
        from .log_pg import read_pg_entries

        return read_pg_entries(str(path), since=since, after_seq=after_seq)
    return _read_sqlite_entries(Path(path), since=since, after_seq=after_seq)


def _read_sqlite_entries(path: Path, *, since: str | None = None, after_seq: int = 0) -> Iterator[LogEntry]:
    if not path.is_file() or path.stat().st_size == 0:
        raise SearchLogError(f"no search log at {path}" if not path.is_file() else f"{path} is empty (0 bytes)")
    start = normalise_time(since) if since else ""
    if not 0 <= after_seq <= MAX_SEQ:
        raise SearchLogError(f"after must be a seq from 0 to {MAX_SEQ}, got {after_seq}")
    try:
        conn = _ro_connect(path)
    except sqlite3.Error as exc:
        raise SearchLogError(f"{path}: cannot open the search log: {exc}") from exc
    try:
        if "seq" not in _columns(conn, "entries"):
            raise SearchLogError(f"{path} is not a search log (no entries table)")
        sig = "sig" if "sig" in _columns(conn, "entries") else "NULL"
        last = after_seq
        while True:
            rows = conn.execute(f"SELECT seq, hash, body, {sig} FROM entries WHERE seq > ? AND time >= ? "
                                "ORDER BY seq LIMIT 1000", (last, start)).fetchall()
            if not rows:
                return
            for s, h, b, g in rows:
                yield LogEntry(seq=int(s), hash=h, body=json.loads(b), sig=g)
            last = int(rows[-1][0])
    except sqlite3.Error as exc:
        raise SearchLogError(f"{path}: cannot read the search log: {exc}") from exc
    finally:
        conn.close()


def verify_log(path: LogLocation, *, public_keys: Sequence[LogPublicKey] | None = None,
               anchor: tuple[int, str] | None = None, checkpoint: Checkpoint | None = None) -> VerifyReport:
    """Check the log ``path`` (a file, or a ``postgresql://`` URL), read-only (see the module docstring
    for what this detects)."""
    if is_database_url(path):
        from .log_pg import verify_pg_log

        return verify_pg_log(str(path), public_keys=public_keys, anchor=anchor, checkpoint=checkpoint)
    return _verify_sqlite_log(Path(path), public_keys=public_keys, anchor=anchor, checkpoint=checkpoint)


def _verify_sqlite_log(path: Path, *, public_keys: Sequence[LogPublicKey] | None = None,
                       anchor: tuple[int, str] | None = None, checkpoint: Checkpoint | None = None) -> VerifyReport:
    path = Path(path)
    fingerprints = tuple(sorted(k.fingerprint for k in public_keys)) if public_keys is not None else ()
    if not path.exists():
        return _failed("missing", f"no search log at {path}", public_keys=fingerprints)
    if path.stat().st_size == 0:
        return _failed("not_a_log", f"{path} is empty (0 bytes), not a search log: the log was emptied or replaced",
                       public_keys=fingerprints)
    try:
        conn = _ro_connect(path)
    except sqlite3.Error as exc:
        return _failed("not_a_log", f"{path}: cannot open it as a search log: {exc}", public_keys=fingerprints)
    try:
        conn.execute("BEGIN")  # one snapshot, whatever writers do meanwhile
        objects = {(str(t), str(n)) for t, n in conn.execute("SELECT type, name FROM sqlite_master")}
        if ("table", "entries") not in objects or ("table", "head") not in objects:
            return _failed("not_a_log", f"{path} is not a search log: it has no entries or head table",
                           public_keys=fingerprints)
        dropped = [t for t in _TRIGGERS if ("trigger", t) not in objects]
        head_row = conn.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
        head = (int(head_row[0]), str(head_row[1])) if head_row else None
        sig = "sig" if "sig" in _columns(conn, "entries") else "NULL"
        cursor = conn.execute(f"SELECT seq, body, hash, {sig} FROM entries ORDER BY seq")
        rows: Iterator[Row] = ((int(s), str(b), str(h), None if g is None else str(g)) for s, b, h, g in cursor)
        report = verify_entries(rows, head=head, public_keys=public_keys, anchor=anchor, checkpoint=checkpoint)
    except sqlite3.Error as exc:
        return _failed("not_a_log", f"{path}: cannot read it as a search log: {exc}", public_keys=fingerprints)
    finally:
        conn.close()
    if dropped and report.status not in ("broken", "truncated"):
        plural = len(dropped) > 1
        return dataclasses.replace(report, ok=False, status="broken", problem=(
            f"the append-only trigger{'s' if plural else ''} {', '.join(dropped)} {'were' if plural else 'was'} "
            f"dropped: someone wrote to the file outside facelens (the entries themselves "
            f"{'check out' if report.ok else 'are ' + report.status})"))
    return report


def verify_lines(lines: Iterable[str], *, public_keys: Sequence[LogPublicKey] | None = None,
                 anchor: tuple[int, str] | None = None, checkpoint: Checkpoint | None = None) -> VerifyReport:
    """Verify an exported JSON-lines file: the chain from its first entry on (the file has no head, so
    entries cut from its end are noticed only against a checkpoint or anchor)."""
    rows: list[Row] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            stored = obj.pop("hash")
            sig = obj.pop("sig", None)
            rows.append((int(obj["seq"]), canonical_json(obj), str(stored), None if sig is None else str(sig)))
        except (ValueError, KeyError, TypeError, AttributeError):
            return _failed("broken", f"line {n} is not a search log entry", entries=len(rows))
    if not rows:
        return verify_entries([], head=None, has_head=False, public_keys=public_keys, anchor=anchor,
                              checkpoint=checkpoint)
    first = json.loads(rows[0][1])
    return verify_entries(rows, head=None, has_head=False, first_seq=rows[0][0],
                          first_prev=str(first.get("prev_hash")), public_keys=public_keys, anchor=anchor,
                          checkpoint=checkpoint)


def make_checkpoint(path: LogLocation, key: LogSigningKey) -> Checkpoint:
    """A signed checkpoint of the log's head, after checking the whole log with ``key``'s public key
    (a checkpoint must not vouch for a log that is already broken). Read-only; raises SearchLogError."""
    report = verify_log(path, public_keys=[key.public_key])
    if not report.ok or report.head_seq is None or report.head_hash is None:
        raise SearchLogError(f"no checkpoint made: the log is {report.status}: {report.problem}")
    checkpoint = Checkpoint(seq=report.head_seq, hash=report.head_hash, time=_now(),
                            public_key=key.public_key.fingerprint, signature="")
    return Checkpoint(seq=checkpoint.seq, hash=checkpoint.hash, time=checkpoint.time,
                      public_key=checkpoint.public_key, signature=_b64(key.sign(checkpoint._message())))


# -- writing -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PreparedEntry:
    """An entry made and signed, ready to be stored: what :meth:`LogStorage.append` writes."""

    seq: int
    time: str
    hash: str
    text: str
    sig: str
    body: Mapping[str, Any]

    def entry(self) -> LogEntry:
        return LogEntry(seq=self.seq, hash=self.hash, body=self.body, sig=self.sig)


# given the head (seq, hash) read inside the storage's lock ((0, GENESIS) for an empty log): the next entry
EntryMaker = Callable[[int, str], PreparedEntry]


class LogStorage(Protocol):
    """Where a :class:`SearchLog` keeps its entries: a SQLite file (:class:`SqliteLogStorage`) or a
    PostgreSQL database (:class:`facelens.accountability.log_pg.PgLogStorage`).

    ``append`` holds a lock that serialises the chain across every writer of the log (threads,
    processes, hosts): it reads the head, lets ``make`` build and sign the next entry, and stores the
    entry and the new head in one durable transaction. ``verify`` is read-only. ``restored`` names the
    append-only triggers found dropped (or disabled) and restored on opening; the log records that fact.
    """

    location: str
    restored: list[str]

    def append(self, make: EntryMaker) -> LogEntry: ...
    def head(self) -> tuple[int, str] | None: ...
    def entries(self, *, after_seq: int, limit: int) -> list[LogEntry]: ...
    def iter_entries(self, *, since: str | None, after_seq: int) -> Iterator[LogEntry]: ...
    def verify(self, *, public_keys: Sequence[LogPublicKey] | None, anchor: tuple[int, str] | None,
               checkpoint: Checkpoint | None) -> VerifyReport: ...
    def close(self) -> None: ...


def _create_log_file(path: Path) -> None:
    """Make a new, empty log at ``path`` (mode 0600: purposes and ids are for the service's operators
    only) with its tables and triggers, built under a temporary name and linked into place, so that a
    log file is never seen half made (several processes may start at once: the first link wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            os.chmod(tmp, 0o600)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN")
            for statement in (*_TABLES, *_TRIGGER_SQL.values()):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {LOG_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()  # checkpoints the WAL into the file and removes it
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        for side in ("", "-wal", "-shm"):
            Path(f"{tmp}{side}").unlink(missing_ok=True)


class SqliteLogStorage:
    """The log in a SQLite file (``<home>/service/search-log.sqlite``): the embedded default. Writers
    (threads of one process, and other processes) are serialised by ``BEGIN IMMEDIATE``.

    Opening an existing file never hides what was done to it: a 0-byte file is refused (a log emptied
    outside facelens), a log from before signing gets its ``sig`` column (its entries stay unsigned),
    and append-only triggers found dropped are restored (``restored``) for the log to record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self.restored: list[str] = []
        self._lock = threading.Lock()
        try:
            if not path.exists():
                _create_log_file(path)
            if path.stat().st_size == 0:  # never left by facelens: a new log appears complete
                raise SearchLogError(f"{path} is empty (0 bytes), not a search log: it was emptied outside "
                                     f"facelens; keep it as evidence, and move it away to start a new log")
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")  # an entry is on disk before the search answers
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                objects = {(str(t), str(n)) for t, n in self._conn.execute("SELECT type, name FROM sqlite_master")}
                if ("table", "entries") not in objects:
                    raise SearchLogError(f"{path} is not a search log, or its entries table was dropped; run "
                                         f"`facelens log verify` and keep the file as evidence")
                else:
                    version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
                    if version > LOG_SCHEMA_VERSION:
                        raise SearchLogError(f"{path}: the search log's schema is version {version}, newer than this "
                                             f"facelens knows ({LOG_SCHEMA_VERSION}): upgrade facelens")
                    if "sig" not in _columns(self._conn, "entries"):
                        self._conn.execute("ALTER TABLE entries ADD COLUMN sig TEXT")
                    if version < LOG_SCHEMA_VERSION:
                        self._conn.execute(f"PRAGMA user_version = {LOG_SCHEMA_VERSION}")
                    if ("table", "head") not in objects:
                        raise SearchLogError(f"{path}: the search log's head table was dropped; run "
                                             f"`facelens log verify` and keep the file as evidence")
                    for name, sql in _TRIGGER_SQL.items():
                        if ("trigger", name) not in objects:
                            self._conn.execute(sql)
                            self.restored.append(name)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            raise SearchLogError(f"{path}: cannot open the search log: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def append(self, make: EntryMaker) -> LogEntry:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    row = self._conn.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
                    if row is None and self._conn.execute("SELECT 1 FROM entries LIMIT 1").fetchone():
                        raise SearchLogError(f"{self.path}: the log has entries but its head row is gone; run "
                                             f"`facelens log verify` and keep the file as evidence")
                    new = make(*((int(row[0]), str(row[1])) if row else (0, GENESIS)))
                    self._conn.execute("INSERT INTO entries (seq, time, hash, body, sig) VALUES (?, ?, ?, ?, ?)",
                                       (new.seq, new.time, new.hash, new.text, new.sig))
                    self._conn.execute("INSERT OR REPLACE INTO head VALUES (1, ?, ?)", (new.seq, new.hash))
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, ValueError, TypeError) as exc:
                raise SearchLogError(f"{self.path}: the search log could not be written: {exc}") from exc
        return new.entry()

    def head(self) -> tuple[int, str] | None:
        with self._lock:
            row = self._conn.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def entries(self, *, after_seq: int, limit: int) -> list[LogEntry]:
        with self._lock:
            rows = self._conn.execute("SELECT seq, hash, body, sig FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
                                      (min(after_seq, MAX_SEQ), limit)).fetchall()
        return [LogEntry(seq=int(s), hash=h, body=json.loads(b), sig=g) for s, h, b, g in rows]

    def iter_entries(self, *, since: str | None, after_seq: int) -> Iterator[LogEntry]:
        return _read_sqlite_entries(self.path, since=since, after_seq=after_seq)

    def verify(self, *, public_keys: Sequence[LogPublicKey] | None, anchor: tuple[int, str] | None,
               checkpoint: Checkpoint | None) -> VerifyReport:
        return _verify_sqlite_log(self.path, public_keys=public_keys, anchor=anchor, checkpoint=checkpoint)


def _storage(location: LogLocation) -> LogStorage:
    if is_database_url(location):
        from .log_pg import PgLogStorage

        return PgLogStorage(str(location))
    return SqliteLogStorage(Path(location))


def log_location(home: Path, *, database: str | None = None) -> LogLocation:
    """Where the home's log is: its PostgreSQL database (``database``, else ``$FACELENS_DATABASE``, else
    the home's ``facelens.toml``: :func:`facelens.config.database_url`) or ``<home>/service/search-log.sqlite``."""
    url = database_url(home, database)
    return url if url is not None else Path(home).expanduser() / "service" / LOG_NAME


class SearchLog:
    """The search log of one facelens home, open for appending entries signed with ``signing_key``
    (default: ``$FACELENS_LOG_SIGNING_KEY``, else ``log-signing.key`` beside a log file, made on first
    use). ``path``: the SQLite file (``<home>/service/search-log.sqlite``) or a ``postgresql://`` URL
    (:class:`~facelens.accountability.log_pg.PgLogStorage`: several servers on several hosts append to
    one chain). Thread-safe; several processes may append to the same log.

    Opening an existing log never hides what was done to it: a 0-byte file is refused (a log emptied
    outside facelens), a log from before signing gets its ``sig`` column (its entries stay unsigned),
    and append-only triggers found dropped are restored *and* the fact is appended to the log.
    """

    def __init__(self, path: LogLocation, *, signing_key: LogSigningKey | None = None) -> None:
        self.path = path
        if signing_key is None:  # $FACELENS_LOG_SIGNING_KEY, else beside the log
            env = os.environ.get(SIGNING_KEY_ENV)
            if not env and is_database_url(path):
                raise SearchLogError("a search log in a database needs its signing key file: give signing_key, "
                                     f"--signing-key or ${SIGNING_KEY_ENV} (the key never goes in the database)")
            key_path = Path(env).expanduser() if env else Path(path).parent / "log-signing.key"
            signing_key = LogSigningKey.load_or_create(key_path)
        self.signing_key = signing_key
        self._signer = signing_key.public_key.fingerprint
        self.storage: LogStorage = _storage(path)
        restored = self.storage.restored
        if restored:
            logger.warning("%s: the append-only triggers %s had been dropped or disabled; restored, and recorded in "
                           "the log", self.storage.location, ", ".join(restored))
            self.append({"action": "log_triggers_restored", "triggers": restored})

    @classmethod
    def open(cls, home: Path, *, signing_key_path: Path | None = None, database: str | None = None) -> SearchLog:
        """The log of ``home`` (:func:`log_location`: its database, else its file), signed with the key at
        ``signing_key_path`` (default: :func:`default_signing_key_path`), which is created if missing."""
        key = LogSigningKey.load_or_create(signing_key_path or default_signing_key_path(home))
        location = log_location(home, database=database)
        if isinstance(location, Path):
            location = service_dir(home) / LOG_NAME  # makes the folder, mode 0700
        return cls(location, signing_key=key)

    def close(self) -> None:
        self.storage.close()

    def _prepare(self, record: Mapping[str, Any], seq: int, prev: str) -> PreparedEntry:
        body = {**record, "v": LOG_VERSION, "seq": seq + 1, "time": _now(), "prev_hash": prev,
                "signer": self._signer}
        text = canonical_json(body)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        sig = _b64(self.signing_key.sign(_entry_message(digest)))
        return PreparedEntry(seq=seq + 1, time=body["time"], hash=digest, text=text, sig=sig, body=body)

    def append(self, record: Mapping[str, Any]) -> LogEntry:
        """Add an entry (``record`` plus v, seq, time, prev_hash and signer; then its hash and signature),
        durably; raises SearchLogError. ``record`` is any JSON object naming its ``action``."""
        clash = _RESERVED & set(record)
        if clash:
            raise SearchLogError(f"a log record may not set {', '.join(sorted(clash))}")
        if not isinstance(record.get("action"), str):
            raise SearchLogError("a log record needs an 'action' (a string)")
        return self.storage.append(functools.partial(self._prepare, record))

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last entry as recorded by the head row; None for an empty log."""
        return self.storage.head()

    def entries(self, *, after_seq: int = 0, limit: int = 100) -> list[LogEntry]:
        """Up to ``limit`` entries with seq above ``after_seq``, in order."""
        return self.storage.entries(after_seq=after_seq, limit=limit)

    def iter_entries(self, *, since: str | None = None, after_seq: int = 0) -> Iterator[LogEntry]:
        """Every entry from ``since`` (an ISO 8601 time) and after ``after_seq``, in order, a page at a time."""
        return self.storage.iter_entries(since=since, after_seq=after_seq)

    def verify(self, *, anchor: tuple[int, str] | None = None, checkpoint: Checkpoint | None = None) -> VerifyReport:
        """:func:`verify_log` of this log with its own signing key's public key."""
        return self.storage.verify(public_keys=[self.signing_key.public_key], anchor=anchor, checkpoint=checkpoint)


# -- what a search or compare records: moved to records.py (these names stay importable from here) ------

from .records import compare_record, failure, search_record  # noqa: E402
