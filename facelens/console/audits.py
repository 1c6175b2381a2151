"""Audits run from the console: ``facelens audit DATASET --out <home>/audits/NAME`` started from the Audit
page, run in the service's process, its progress on the page while it runs, its report listed when done.

The dataset is a folder (or a CSV manifest) ON THE MACHINE RUNNING ``facelens serve``, named by its absolute
path and read by the service's user: the browser uploads nothing. Layouts are those of ``facelens audit``
(:func:`facelens.audit.dataset.read_dataset`): a CSV manifest, LFW, UTKFace, congress-past, or one folder
per person.

A job's state lives in ``<home>/audits/NAME/job.json`` (replaced atomically as it progresses), so every
process of a ``serve --processes N`` shows the same progress, whichever of them runs it. One audit runs
at a time per home: the job holds an exclusive ``flock`` on ``<home>/audits/.running.lock`` for as long as
it runs, and the kernel releases it if the process dies, so a job whose file still says ``running`` while
nobody holds the lock was stopped (its process ended) and is shown as such. The audit embeds with one
thread beside the service's own work, reusing ``<home>/cache/embeddings-<model>.npz`` as the CLI does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import write_files
from ..errors import FacelensError, InvalidArgumentError

if TYPE_CHECKING:
    from ..audit.dataset import Dataset
    from ..engine import Engine

__all__ = ["KINDS", "AuditJob", "AuditConflictError", "audit_jobs", "read_job", "start_audit"]

logger = logging.getLogger(__name__)

KINDS = ("manifest", "lfw", "utkface", "congress", "folder")
"""Dataset layouts ``facelens audit --kind`` knows (none given: recognised from the folder)."""
JOB_FILE = "job.json"
LOCK_FILE = ".running.lock"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_WRITE_EVERY_S = 0.5  # progress is written at most this often (and at every stage's end)


class AuditConflictError(FacelensError):
    """Another audit of this home is running (one at a time), or a report of the name asked for exists.
    HTTP 409 (its ``status`` and ``code``, as :func:`facelens.errors.error_status` reads them)."""

    status = 409
    code = "audit_conflict"


@dataclass(frozen=True, slots=True)
class AuditJob:
    """One audit started from the console. ``state``: ``running``, ``done`` (``report.html`` written),
    ``failed`` (``error`` says why) or ``stopped`` (its process ended before it finished). ``stage`` and
    ``done``/``total``: the step running (``"read"``, ``"embed <dataset>"``, ``"measure"``) and how far
    it is. ``by``: the name of the key that started it. Times: UTC, ISO 8601."""

    name: str
    dataset: str
    kind: str | None
    max_fmr: float | None
    images: int
    by: str
    started: str
    state: str = "running"
    stage: str = "read"
    done: int = 0
    total: int = 0
    finished: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> AuditJob:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in fields})

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write(folder: Path, job: AuditJob) -> None:
    write_files(folder, {JOB_FILE: json.dumps(job.to_dict(), indent=1)})


def _lock_free(root: Path) -> bool:
    """Whether no audit holds this home's lock now (tested with a shared lock, released at once)."""
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases the lock taken
    return True


def read_job(root: Path, name: str) -> AuditJob | None:
    """The job of report ``name`` in ``root`` (``<home>/audits``), None if none was started there; a job
    still ``running`` in its file while no process holds the lock is ``stopped``."""
    if not _NAME.fullmatch(name):
        return None
    try:
        job = AuditJob.from_dict(json.loads((root / name / JOB_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if job.state == "running" and _lock_free(root):
        job = AuditJob.from_dict(json.loads((root / name / JOB_FILE).read_text(encoding="utf-8")))  # it may just
        if job.state == "running":  # have ended between the two reads; else its process is gone
            return dataclasses.replace(job, state="stopped", error="the service process running it ended before "
                                                                   "it finished: start it again")
    return job


def audit_jobs(root: Path) -> list[AuditJob]:
    """Every job started in ``root``, newest first."""
    if not root.is_dir():
        return []
    jobs = [j for p in root.glob(f"*/{JOB_FILE}") if (j := read_job(root, p.parent.name)) is not None]
    return sorted(jobs, key=lambda j: j.started, reverse=True)


def _dataset(spec: str, kind: str | None) -> Dataset:
    """The dataset at ``spec`` on this machine, with errors that say where it was looked for."""
    from ..audit.dataset import read_dataset

    if kind is not None and kind not in KINDS:
        raise InvalidArgumentError(f"the dataset layout is one of {', '.join(KINDS)} (or empty: recognised)")
    path = Path(spec).expanduser()
    if not path.is_absolute():
        raise InvalidArgumentError(f"give the dataset's absolute path on the server (such as /data/lfw), not "
                                   f"{spec!r}: it is read on the machine running facelens serve")
    if not path.exists():
        raise InvalidArgumentError(f"there is no file or folder {str(path)!r} on the server: the dataset is read "
                                   f"on the machine running facelens serve, by its user, and is not uploaded")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise InvalidArgumentError(f"{str(path)!r} is on the server but the service's user may not read it")
    ds = read_dataset(path, kind=kind)  # type: ignore[arg-type]
    if len(ds) < 2:
        raise InvalidArgumentError(f"{str(path)!r} holds {len(ds)} image(s) in the {kind or 'recognised'} layout: "
                                   f"an audit needs labelled images of several people")
    return ds


def start_audit(engine: Engine, root: Path, *, dataset: str, name: str | None, kind: str | None,
                max_fmr: float | None, by: str) -> AuditJob:
    """Check the request, read the dataset (its layout and images), then run the audit in a thread of this
    process and return its job (``running``). Raises InvalidArgumentError (a bad name, path, layout or
    rate) or AuditConflictError (one is running; a report of that name exists), all before anything runs."""
    from ..audit.dataset import DatasetError

    name = (name or "").strip() or None
    if name is not None and not _NAME.fullmatch(name):
        raise InvalidArgumentError("a report name is 1-64 letters, digits, _ . - (starting with a letter or digit)")
    if max_fmr is not None:
        engine.operating_point(max_fmr=max_fmr)  # a rate the engine refuses is refused now, not minutes later
    try:
        ds = _dataset(dataset.strip(), kind)
    except DatasetError as exc:
        raise InvalidArgumentError(f"{exc} (layouts: a CSV manifest, LFW, UTKFace, congress-past, or one folder "
                                   f"per person)") from None
    if name is None:  # the dataset's name and the time: "lfw-20261201-151200"
        stem = re.sub(r"[^A-Za-z0-9_.-]", "-", ds.name).strip("-.")[:40] or "audit"
        name = f"{stem}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    root.mkdir(parents=True, exist_ok=True)
    lock = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        running = [j.name for j in audit_jobs(root) if j.state == "running"]
        raise AuditConflictError(f"an audit is running ({', '.join(running) or 'in another process'}): one at a "
                                f"time; start this one when it has finished") from None
    folder = root / name
    try:
        folder.mkdir()
    except FileExistsError:
        os.close(lock)
        raise AuditConflictError(f"a report named {name!r} exists in {root}: choose another name") from None
    job = AuditJob(name=name, dataset=str(Path(dataset.strip()).expanduser()), kind=kind, max_fmr=max_fmr,
                   images=len(ds), by=by, started=_now(), total=len(ds))
    _write(folder, job)
    thread = threading.Thread(target=_run, args=(engine, ds, folder, job, lock), daemon=True,
                              name=f"facelens-audit-{name}")
    thread.start()
    return job


def _run(engine: Engine, ds: Dataset, folder: Path, job: AuditJob, lock: int) -> None:
    """The job's thread: the audit as ``facelens audit`` runs it, its progress written to ``job.json``."""
    from ..audit.report import write_report
    from ..audit.run import audit

    last = 0.0
    state = job

    def progress(stage: str, done: int, total: int) -> None:
        nonlocal last, state
        state = dataclasses.replace(state, stage=stage, done=done, total=total)
        now = time.monotonic()
        if now - last >= _WRITE_EVERY_S or done >= total:
            last = now
            _write(folder, state)

    try:
        cache = Path(engine.home) / "cache" / f"embeddings-{engine.model_name}.npz"
        cache.parent.mkdir(parents=True, exist_ok=True)
        doc = audit(engine, ds, max_fmr=job.max_fmr, workers=1, cache=cache, progress=progress)
        _write(folder, dataclasses.replace(state, stage="write the report"))
        write_report(doc, folder)
        state = dataclasses.replace(state, state="done", stage="done", done=state.total, finished=_now())
    except Exception as exc:  # noqa: BLE001 - a failed audit is shown on its page, with why
        if not isinstance(exc, FacelensError):
            logger.error("audit %s failed", job.name, exc_info=exc)
        state = dataclasses.replace(state, state="failed", finished=_now(), error=str(exc) or type(exc).__name__)
    finally:
        try:
            _write(folder, state)
        finally:
            os.close(lock)  # releases the lock: the next audit may start
