"""The search log: an append-only, hash-chained record of every search and compare the service ran.

Each entry is a JSON object: what was done (``action``), by which key (its public id, never the
secret), for what ``purpose``, on which collection of which size, with which probe (the sha256 of the
image, or a stored face id), at which operating point (``max_fmr`` and its score ``threshold``), and the
candidates returned (face ids, person ids, scores, false-match rates). Never an image, an embedding or
a face box. Each entry also holds ``seq`` (1, 2, 3, ...), ``time`` (UTC) and ``prev_hash``, the hash of
the entry before it (64 zeros for the first); its own ``hash`` is the sha256 of its canonical JSON
(keys sorted, no spaces, UTF-8). A ``head`` row holds the last entry's seq and hash, written in the same
transaction as the entry.

Why SQLite rather than a JSON-lines file: an entry and the head move together in one transaction, so a
crash leaves no torn line and no head that disagrees with the entries; concurrent writers (threads, or
several processes) are serialised by the database; the admin endpoint pages by seq and ``export
--since`` seeks by time through an index. ``facelens log export`` writes JSON lines for anyone who
wants a plain file, and such a file can be verified on its own.

What :meth:`SearchLog.verify` detects: an entry edited (its hash no longer matches its content), deleted
or inserted in the middle (a seq gap or a broken ``prev_hash`` link), reordered (an entry's ``seq``
disagrees with its place), and entries removed from the end (the head names a later entry). What it
cannot detect on its own: someone with write access to the file who rewrites every entry from some
point on *and* the head, consistently; the chain has no secret. Against that, record the head hash
printed by ``facelens log verify`` somewhere else now and then (a ticket, an email, a second machine):
``verify --anchor SEQ:HASH`` then proves that everything up to that entry is unchanged. Triggers refuse
UPDATE and DELETE on entries, which stops accidents, not an attacker who drops them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FacelensError
from ..types import Comparison, SearchResult
from .errors import SearchLogError, error_status
from .keys import service_dir

__all__ = ["GENESIS", "LogEntry", "SearchLog", "VerifyReport", "canonical_json", "compare_record", "failure",
           "search_record", "verify_entries"]

GENESIS = "0" * 64
LOG_VERSION = 1
_RESERVED = frozenset({"seq", "time", "prev_hash", "hash", "v"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,          -- 1, 2, 3, ... (the body's seq)
    time TEXT NOT NULL,               -- the body's time, for seeking
    hash TEXT NOT NULL,               -- sha256 of the body
    body TEXT NOT NULL                -- canonical JSON of the entry without its hash
);
CREATE INDEX IF NOT EXISTS entries_time ON entries (time);
CREATE TABLE IF NOT EXISTS head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS entries_append_only_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'the search log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_append_only_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'the search log is append-only'); END;
"""


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


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry: ``body`` (with its seq, time and prev_hash) and its ``hash``."""

    seq: int
    hash: str
    body: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**self.body, "hash": self.hash}


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :meth:`SearchLog.verify` found. ``first_bad_seq`` is the first entry that fails (or, for a
    truncated tail, the first missing one); ``problem`` says how."""

    ok: bool
    entries: int
    head_seq: int | None
    head_hash: str | None
    first_bad_seq: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "head_seq": self.head_seq, "head_hash": self.head_hash,
                "first_bad_seq": self.first_bad_seq, "problem": self.problem}


def verify_entries(rows: Iterable[tuple[int, str, str]], *, head: tuple[int, str] | None,
                   first_seq: int = 1, first_prev: str = GENESIS,
                   anchor: tuple[int, str] | None = None) -> VerifyReport:
    """Check a chain given as ``(row seq, body JSON, stored hash)`` in stored order.

    ``head`` is the stored (seq, hash) of the last entry, or None when there is none to check (an
    exported file). ``first_seq``/``first_prev`` say where the chain starts (an export that begins
    later). ``anchor`` is a (seq, hash) recorded earlier that must still be in the chain.
    """
    expected_seq, prev = first_seq, first_prev
    count = 0
    anchor_seen = False

    def bad(seq: int, problem: str) -> VerifyReport:
        return VerifyReport(ok=False, entries=count, head_seq=head[0] if head else None,
                            head_hash=head[1] if head else None, first_bad_seq=seq, problem=problem)

    for row_seq, text, stored_hash in rows:
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
        if anchor is not None and anchor[0] == row_seq:
            if anchor[1] != actual:
                return bad(row_seq, f"entry {row_seq} hashes to {actual[:12]}..., not the anchor {anchor[1][:12]}...: "
                                    f"the log was rewritten since the anchor was recorded")
            anchor_seen = True
        prev, expected_seq = actual, row_seq + 1
        count += 1
    last_seq = expected_seq - 1
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last_seq:
            return bad(last_seq + 1, f"the log ends at entry {last_seq} but its head names entry {head_seq}: "
                                     f"entries {last_seq + 1}-{head_seq} were removed from the end")
        if head_seq < last_seq:
            return bad(head_seq + 1, f"entries {head_seq + 1}-{last_seq} come after the head (entry {head_seq}): "
                                     f"appended outside the log's own writer")
        if count and head_hash != prev:
            return bad(last_seq, f"the head's hash {head_hash[:12]}... is not that of the last entry {last_seq}")
    if anchor is not None and not anchor_seen:
        return bad(anchor[0], f"the anchor entry {anchor[0]} is not in the log (it ends at {last_seq})")
    return VerifyReport(ok=True, entries=count, head_seq=head[0] if head else (last_seq if count else None),
                        head_hash=head[1] if head else (prev if count else None))


class SearchLog:
    """The search log of one facelens home (``<home>/service/search-log.sqlite``). Thread-safe; several
    processes may append to the same file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        fresh = not path.exists()
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            if fresh:
                os.chmod(path, 0o600)  # purposes and ids: for the service's operators only
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")  # an entry is on disk before the search answers
            self._conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise SearchLogError(f"{path}: cannot open the search log: {exc}") from exc

    @classmethod
    def open(cls, home: Path) -> SearchLog:
        return cls(service_dir(home) / "search-log.sqlite")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def append(self, record: Mapping[str, Any]) -> LogEntry:
        """Add an entry (``record`` plus seq, time and prev_hash), durably; raises SearchLogError."""
        clash = _RESERVED & set(record)
        if clash:
            raise SearchLogError(f"a log record may not set {', '.join(sorted(clash))}")
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    row = self._conn.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
                    seq, prev = (int(row[0]), str(row[1])) if row else (0, GENESIS)
                    body = {**record, "v": LOG_VERSION, "seq": seq + 1, "time": _now(), "prev_hash": prev}
                    text = canonical_json(body)
                    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
                    self._conn.execute("INSERT INTO entries VALUES (?, ?, ?, ?)", (seq + 1, body["time"], digest, text))
                    self._conn.execute("INSERT OR REPLACE INTO head VALUES (1, ?, ?)", (seq + 1, digest))
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, ValueError, TypeError) as exc:
                raise SearchLogError(f"{self.path}: the search log could not be written: {exc}") from exc
        return LogEntry(seq=seq + 1, hash=digest, body=body)

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last entry as recorded by the head row; None for an empty log."""
        with self._lock:
            row = self._conn.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def entries(self, *, after_seq: int = 0, limit: int = 100) -> list[LogEntry]:
        """Up to ``limit`` entries with seq above ``after_seq``, in order."""
        with self._lock:
            rows = self._conn.execute("SELECT seq, hash, body FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
                                      (after_seq, limit)).fetchall()
        return [LogEntry(seq=int(s), hash=h, body=json.loads(b)) for s, h, b in rows]

    def iter_entries(self, *, since: str | None = None, after_seq: int = 0) -> Iterator[LogEntry]:
        """Every entry from ``since`` (an ISO 8601 time) and after ``after_seq``, in order, a page at a time."""
        start = normalise_time(since) if since else ""
        last = after_seq
        while True:
            with self._lock:
                rows = self._conn.execute("SELECT seq, hash, body FROM entries WHERE seq > ? AND time >= ? "
                                          "ORDER BY seq LIMIT 1000", (last, start)).fetchall()
            if not rows:
                return
            for s, h, b in rows:
                yield LogEntry(seq=int(s), hash=h, body=json.loads(b))
            last = int(rows[-1][0])

    def verify(self, *, anchor: tuple[int, str] | None = None) -> VerifyReport:
        """Check the whole chain and the head (see the module docstring for what this detects)."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0)
        try:
            conn.execute("BEGIN")  # one snapshot, whatever writers do meanwhile
            head_row = conn.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
            head = (int(head_row[0]), str(head_row[1])) if head_row else None
            cursor = conn.execute("SELECT seq, body, hash FROM entries ORDER BY seq")
            rows: Iterator[tuple[int, str, str]] = ((int(s), str(b), str(h)) for s, b, h in cursor)
            report = verify_entries(rows, head=head, anchor=anchor)
            if head is None and report.ok and report.entries:
                return VerifyReport(ok=False, entries=report.entries, head_seq=None, head_hash=None,
                                    first_bad_seq=report.entries,
                                    problem="the log has entries but no head: the head row was deleted")
            return report
        finally:
            conn.close()


def verify_lines(lines: Iterable[str], *, anchor: tuple[int, str] | None = None) -> VerifyReport:
    """Verify an exported JSON-lines file: the chain from its first entry on (the file has no head, so
    entries cut from its end are not detectable; compare its last hash with ``log verify``)."""
    rows: list[tuple[int, str, str]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            stored = obj.pop("hash")
            rows.append((int(obj["seq"]), canonical_json(obj), str(stored)))
        except (ValueError, KeyError, TypeError, AttributeError):
            return VerifyReport(ok=False, entries=len(rows), head_seq=None, head_hash=None, first_bad_seq=None,
                                problem=f"line {n} is not a search log entry")
    if not rows:
        return VerifyReport(ok=True, entries=0, head_seq=None, head_hash=None)
    first = json.loads(rows[0][1])
    return verify_entries(rows, head=None, first_seq=rows[0][0], first_prev=str(first.get("prev_hash")),
                          anchor=anchor)


# -- what a search or compare records ----------------------------------------------------------------
# Built from the results' to_dict(), so fields the engine adds (an operating point's policy, a match's
# extrapolation flag) are recorded without a change here. Left out: faces' boxes, landmarks and quality,
# and external image ids (often file names).

_NOT_LOGGED = frozenset({"bbox", "external_image_id", "searched_face", "face_a", "face_b", "matches",
                         "searched_face_id", "collection_size"})


def _candidate(match: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in match.items() if k not in _NOT_LOGGED}


def failure(exc: FacelensError) -> dict[str, str]:
    """The ``error`` of a record whose search or compare failed: the stable code and the message."""
    return {"code": error_status(exc)[1], "message": getattr(exc, "message", str(exc))}


def search_record(*, action: str, key_id: str, purpose: str | None, collection: str, probe: Mapping[str, Any],
                  options: Mapping[str, Any], results: Sequence[SearchResult],
                  error: FacelensError | None = None) -> dict[str, Any]:
    """The log record of one search: ``probe`` is ``{"image_sha256": ...}`` or ``{"face_id": ...}``;
    ``options`` the search options as passed to the engine (so new ones are recorded as they come).
    A search that failed (no face in the probe, an unknown face id...) is recorded too, with no results
    and its ``error``: an attempt is part of who searched for whom."""
    docs = [r.to_dict() for r in results]
    first = docs[0] if docs else {}
    record = {
        "action": action, "key_id": key_id, "purpose": purpose, "collection": collection,
        "collection_size": first.get("collection_size"), "probe": dict(probe), "options": dict(options),
        "operating_point": {k: v for k, v in first.items() if k not in _NOT_LOGGED} if docs else None,
        "results": [{"candidates": [_candidate(m) for m in d["matches"]]} for d in docs],
    }
    if error is not None:
        record["error"] = failure(error)
    return record


def compare_record(*, key_id: str, purpose: str | None, image_a_sha256: str, image_b_sha256: str,
                   options: Mapping[str, Any], result: Comparison | None,
                   error: FacelensError | None = None) -> dict[str, Any]:
    """The log record of one compare (no collection; its one "candidate" is the decision), or of a
    compare that failed (``result`` None, ``error`` given)."""
    doc = result.to_dict() if result is not None else {}
    outcome = {k: v for k, v in doc.items() if k in ("score", "fmr", "match") or k.startswith("fmr_")}
    record = {
        "action": "compare", "key_id": key_id, "purpose": purpose, "collection": None, "collection_size": None,
        "probe": {"image_a_sha256": image_a_sha256, "image_b_sha256": image_b_sha256}, "options": dict(options),
        "operating_point": ({k: v for k, v in doc.items() if k not in _NOT_LOGGED and k not in outcome}
                            if result is not None else None),
        "results": [outcome] if result is not None else [],
    }
    if error is not None:
        record["error"] = failure(error)
    return record
