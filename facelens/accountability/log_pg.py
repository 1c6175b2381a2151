"""The signed log in PostgreSQL: one chain that several ``facelens serve`` processes, on several hosts, append to.

The same entries as the SQLite file (facelens/accountability/log.py: canonical JSON bodies, sha256 chain,
Ed25519 signatures made by the service with a key file that never enters the database), in two tables:
``log_entries (seq, time, hash, body, sig)`` and ``log_head (id = 1, seq, hash)``, schema version 2 of
the ``log`` component (:mod:`facelens.database`; version 1, unsigned entries, only ever existed in
SQLite files).

- The chain is serialised by a transaction-level advisory lock (``pg_advisory_xact_lock``) taken before
  the head is read: every writer of the database, whichever host it runs on, appends after the entry
  the previous writer committed, so the chain never forks. The lock ends with the transaction, also when
  a writer's connection dies.
- Triggers refuse UPDATE, DELETE and TRUNCATE on ``log_entries`` (``ENABLE ALWAYS``: they fire even with
  ``session_replication_role = replica``). The owner of the table or a superuser can still disable or
  drop them; :func:`verify_pg_log` then reports the log broken, and an edited row fails its hash and
  signature whether or not the triggers are back, as with the file.
- Each connection sets ``synchronous_commit = on``: an entry is on the server's disk (its WAL flushed)
  before the append returns, so before the search that wrote it answers.
- Verification runs in one read-only REPEATABLE READ transaction (one snapshot, whatever writers do
  meanwhile) on its own connection, and writes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..database import DatabaseError, connect, migrate, redact, schema_version
from ..errors import SearchLogError
from .log import (
    GENESIS,
    LOG_SCHEMA_VERSION,
    MAX_SEQ,
    Checkpoint,
    EntryMaker,
    LogEntry,
    LogPublicKey,
    Row,
    VerifyReport,
    _failed,
    normalise_time,
    verify_entries,
)

__all__ = ["PG_TRIGGERS", "PgLogStorage", "newest_pg_entries", "read_pg_entries", "verify_pg_log"]

logger = logging.getLogger(__name__)

COMPONENT = "log"
PG_TRIGGERS = ("log_entries_append_only_update", "log_entries_append_only_delete", "log_entries_append_only_truncate")
_APPEND_LOCK = 0x666C6C6F67  # pg_advisory_xact_lock key that serialises the chain ("fllog")
_FUNCTION = ("CREATE OR REPLACE FUNCTION facelens_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
             "BEGIN RAISE EXCEPTION 'the search log is append-only (% refused on %)', TG_OP, TG_TABLE_NAME; END $$")
_TRIGGER_SQL = {
    "log_entries_append_only_update": "CREATE TRIGGER log_entries_append_only_update BEFORE UPDATE ON log_entries "
                                      "FOR EACH ROW EXECUTE FUNCTION facelens_log_append_only()",
    "log_entries_append_only_delete": "CREATE TRIGGER log_entries_append_only_delete BEFORE DELETE ON log_entries "
                                      "FOR EACH ROW EXECUTE FUNCTION facelens_log_append_only()",
    "log_entries_append_only_truncate": "CREATE TRIGGER log_entries_append_only_truncate BEFORE TRUNCATE ON "
                                        "log_entries FOR EACH STATEMENT EXECUTE FUNCTION facelens_log_append_only()",
}
_STEPS: dict[int, list[str]] = {  # version -> the statements that reach it (numbered as the SQLite file's)
    LOG_SCHEMA_VERSION: [
        # the columns of the SQLite file's entries table; body: canonical JSON as hashed, kept as text (never
        # jsonb, which would reorder keys and lose the bytes the hash covers)
        "CREATE TABLE log_entries (seq BIGINT PRIMARY KEY CHECK (seq >= 1), time TEXT NOT NULL, hash TEXT NOT NULL, "
        "body TEXT NOT NULL, sig TEXT)",
        "CREATE INDEX log_entries_time ON log_entries (time)",
        "CREATE TABLE log_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL)",
        _FUNCTION,
        *_TRIGGER_SQL.values(),
        *(f"ALTER TABLE log_entries ENABLE ALWAYS TRIGGER {name}" for name in PG_TRIGGERS),
    ],
}
_TRIGGERS_QUERY = ("SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'log_entries'::regclass "
                   "AND NOT tgisinternal")


def _psycopg_error() -> type[Exception]:
    import psycopg

    return psycopg.Error


def _tables(conn: Any) -> tuple[bool, bool]:
    row = conn.execute("SELECT to_regclass('log_entries'), to_regclass('log_head')").fetchone()
    return row[0] is not None, row[1] is not None


class PgLogStorage:
    """The log in the PostgreSQL database at ``url`` (:class:`facelens.accountability.log.LogStorage`):
    made on first use (schema version 2), its triggers restored if found dropped or disabled (the
    names are in ``restored``, for the log to record). One connection per storage, guarded by a lock
    (reopened after it breaks); the advisory lock serialises appends across every connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.location = redact(url)
        self.restored: list[str] = []
        self._lock = threading.Lock()
        self._conn: Any = None
        error = _psycopg_error()
        try:
            conn = self._connection()
            version = schema_version(conn, COMPONENT)
            entries, head = _tables(conn)
            if version is None and not entries and not head:
                migrate(conn, COMPONENT, _STEPS, url=url)
            elif not entries:
                raise SearchLogError(f"{self.location}: the search log's log_entries table was dropped; run "
                                     f"`facelens log verify` and keep the database as evidence")
            elif not head:
                raise SearchLogError(f"{self.location}: the search log's log_head table was dropped; run "
                                     f"`facelens log verify` and keep the database as evidence")
            else:
                migrate(conn, COMPONENT, _STEPS, url=url)  # records the version of a log made before (no-op)
                self._restore_triggers(conn)
            self._check_durability(conn)
        except DatabaseError as exc:
            raise SearchLogError(f"cannot open the search log: {exc}") from None
        except error as exc:
            raise SearchLogError(f"{self.location}: cannot open the search log: {str(exc).strip()}") from None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                logger.warning("%s: the search log's connection was lost; reconnecting", self.location)
            self._conn = connect(self.url)
        return self._conn

    def _restore_triggers(self, conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
            found = dict(conn.execute(_TRIGGERS_QUERY).fetchall())
            for name in PG_TRIGGERS:
                if name not in found:
                    conn.execute(_FUNCTION)
                    conn.execute(_TRIGGER_SQL[name])
                elif found[name] != "D":
                    continue
                conn.execute(f"ALTER TABLE log_entries ENABLE ALWAYS TRIGGER {name}")
                self.restored.append(name)

    def _check_durability(self, conn: Any) -> None:
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        if fsync != "on":
            logger.warning("%s: the server runs with fsync=%s: a committed log entry can be lost in a power "
                           "failure; set fsync=on for production", self.location, fsync)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def append(self, make: EntryMaker) -> LogEntry:
        """Store the next entry. A connection found dead before the COMMIT was sent (a database restart)
        is replaced and the append tried once more: nothing of the first try was committed. A failure at
        the COMMIT itself is not retried (the entry may or may not be in): SearchLogError."""
        error = _psycopg_error()
        with self._lock:
            for attempt in (1, 2):
                committing = False
                try:
                    conn = self._connection()
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
                        row = conn.execute("SELECT seq, hash FROM log_head WHERE id = 1").fetchone()
                        if row is None and conn.execute("SELECT 1 FROM log_entries LIMIT 1").fetchone():
                            raise SearchLogError(f"{self.location}: the log has entries but its head row is gone; "
                                                 f"run `facelens log verify` and keep the database as evidence")
                        new = make(*((int(row[0]), str(row[1])) if row else (0, GENESIS)))
                        conn.execute("INSERT INTO log_entries (seq, time, hash, body, sig) "
                                     "VALUES (%s, %s, %s, %s, %s)", (new.seq, new.time, new.hash, new.text, new.sig))
                        conn.execute("INSERT INTO log_head (id, seq, hash) VALUES (1, %s, %s) ON CONFLICT (id) "
                                     "DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash", (new.seq, new.hash))
                        committing = True
                    return new.entry()
                except DatabaseError as exc:
                    raise SearchLogError(f"the search log could not be written: {exc}") from None
                except error as exc:
                    if attempt == 1 and not committing and self._conn.broken:
                        logger.warning("%s: the search log's connection was lost (%s); appending again on a new one",
                                       self.location, str(exc).strip())
                        continue
                    raise SearchLogError(f"{self.location}: the search log could not be written: "
                                         f"{str(exc).strip()}") from None
        raise AssertionError("unreachable")

    def head(self) -> tuple[int, str] | None:
        with self._lock:
            row = self._query("SELECT seq, hash FROM log_head WHERE id = 1", ())
        return (int(row[0][0]), str(row[0][1])) if row else None

    def entries(self, *, after_seq: int, limit: int) -> list[LogEntry]:
        with self._lock:
            rows = self._query("SELECT seq, hash, body, sig FROM log_entries WHERE seq > %s ORDER BY seq LIMIT %s",
                               (min(after_seq, MAX_SEQ), limit))
        return [LogEntry(seq=int(s), hash=h, body=json.loads(b), sig=g) for s, h, b, g in rows]

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """A read, tried again once on a new connection when the old one turns out dead (reads are safe to
        repeat; an append is not: it fails, and the search that needed it answers 503)."""
        error = _psycopg_error()
        for attempt in (1, 2):
            try:
                return list(self._connection().execute(sql, params).fetchall())
            except DatabaseError as exc:
                raise SearchLogError(f"cannot read the search log: {exc}") from None
            except error as exc:
                if attempt == 2 or not self._conn.broken:
                    raise SearchLogError(f"{self.location}: cannot read the search log: {str(exc).strip()}") from None
        raise AssertionError("unreachable")

    def iter_entries(self, *, since: str | None, after_seq: int) -> Iterator[LogEntry]:
        return read_pg_entries(self.url, since=since, after_seq=after_seq)

    def verify(self, *, public_keys: Sequence[LogPublicKey] | None, anchor: tuple[int, str] | None,
               checkpoint: Checkpoint | None) -> VerifyReport:
        return verify_pg_log(self.url, public_keys=public_keys, anchor=anchor, checkpoint=checkpoint)


def read_pg_entries(url: str, *, since: str | None = None, after_seq: int = 0) -> Iterator[LogEntry]:
    """Every entry of the log in the database ``url`` from ``since`` (ISO 8601) and after ``after_seq``,
    in order, read-only (its own read-only connection), a page at a time. SearchLogError when the
    database cannot be reached or holds no log."""
    start = normalise_time(since) if since else ""
    if not 0 <= after_seq <= MAX_SEQ:
        raise SearchLogError(f"after must be a seq from 0 to {MAX_SEQ}, got {after_seq}")
    error = _psycopg_error()
    try:
        conn = connect(url, read_only=True)
    except DatabaseError as exc:
        raise SearchLogError(f"cannot read the search log: {exc}") from None
    try:
        if not _tables(conn)[0]:
            raise SearchLogError(f"no search log in {redact(url)}")
        last = after_seq
        while True:
            rows = conn.execute("SELECT seq, hash, body, sig FROM log_entries WHERE seq > %s AND time >= %s "
                                "ORDER BY seq LIMIT 1000", (last, start)).fetchall()
            if not rows:
                return
            for s, h, b, g in rows:
                yield LogEntry(seq=int(s), hash=h, body=json.loads(b), sig=g)
            last = int(rows[-1][0])
    except error as exc:
        raise SearchLogError(f"{redact(url)}: cannot read the search log: {str(exc).strip()}") from None
    finally:
        conn.close()


def verify_pg_log(url: str, *, public_keys: Sequence[LogPublicKey] | None = None,
                  anchor: tuple[int, str] | None = None, checkpoint: Checkpoint | None = None) -> VerifyReport:
    """Check the log in the database ``url``, read-only, as :func:`facelens.accountability.log.verify_log`
    checks a file: every entry's hash, link and signature, the head, a checkpoint or anchor; and the
    append-only triggers (dropped or disabled: broken). ``missing``: no such database, or no log in it."""
    where = redact(url)
    fingerprints = tuple(sorted(k.fingerprint for k in public_keys)) if public_keys is not None else ()
    error = _psycopg_error()
    try:
        conn = connect(url, read_only=True)
    except DatabaseError as exc:
        return _failed("missing", str(exc), public_keys=fingerprints)
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot
            entries, head_table = _tables(conn)
            if not entries and not head_table and schema_version(conn, COMPONENT) is None:
                return _failed("missing", f"no search log in {where}", public_keys=fingerprints)
            if not entries or not head_table:
                return _failed("not_a_log", f"{where} is not a search log: it has no log_entries or log_head table "
                                            f"(dropped)", public_keys=fingerprints)
            triggers = dict(conn.execute(_TRIGGERS_QUERY).fetchall())
            dropped = [t for t in PG_TRIGGERS if t not in triggers]
            disabled = [t for t in PG_TRIGGERS if triggers.get(t) == "D"]
            head_row = conn.execute("SELECT seq, hash FROM log_head WHERE id = 1").fetchone()
            head = (int(head_row[0]), str(head_row[1])) if head_row else None
            with conn.cursor(name="facelens_verify_log") as cursor:
                cursor.itersize = 2000
                cursor.execute("SELECT seq, body, hash, sig FROM log_entries ORDER BY seq")
                rows: Iterator[Row] = ((int(s), str(b), str(h), None if g is None else str(g)) for s, b, h, g in cursor)
                report = verify_entries(rows, head=head, public_keys=public_keys, anchor=anchor,
                                        checkpoint=checkpoint)
    except error as exc:
        return _failed("not_a_log", f"{where}: cannot read it as a search log: {str(exc).strip()}",
                       public_keys=fingerprints)
    finally:
        conn.close()
    if (dropped or disabled) and report.status not in ("broken", "truncated"):
        what = "; ".join(part for part in (
            f"dropped: {', '.join(dropped)}" if dropped else "", f"disabled: {', '.join(disabled)}" if disabled else "")
            if part)
        return dataclasses.replace(report, ok=False, status="broken", problem=(
            f"the append-only triggers were tampered with ({what}): someone with the table owner's or a superuser's "
            f"rights wrote to the log outside facelens (the entries themselves "
            f"{'check out' if report.ok else 'are ' + report.status})"))
    return report


def newest_pg_entries(url: str, *, before: int | None, fields: Mapping[str, str], limit: int) -> list[LogEntry]:
    """Up to ``limit`` entries of the log in ``url``, newest first, with seq below ``before`` (None: any)
    and each body field of ``fields`` equal to its value (the console's log page; read-only)."""
    where: list[str] = ["TRUE"]
    args: list[int | str] = []
    if before is not None:
        where.append("seq < %s")
        args.append(before)
    for name, value in fields.items():
        where.append("(body::jsonb) ->> %s = %s")
        args.extend((name, value))
    error = _psycopg_error()
    try:
        conn = connect(url, read_only=True)
    except DatabaseError as exc:
        raise SearchLogError(f"cannot read the search log: {exc}") from None
    try:
        rows = conn.execute(f"SELECT seq, hash, body, sig FROM log_entries WHERE {' AND '.join(where)} "
                            "ORDER BY seq DESC LIMIT %s", (*args, limit)).fetchall()
    except error as exc:
        raise SearchLogError(f"{redact(url)}: cannot read the search log: {str(exc).strip()}") from None
    finally:
        conn.close()
    return [LogEntry(seq=int(s), hash=h, body=json.loads(b), sig=g) for s, h, b, g in rows]
