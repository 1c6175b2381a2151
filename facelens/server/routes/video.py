"""Video over HTTP (docs/video.md, "The service"): live streams followed inside the service (Rekognition's
stream processors) and searches of uploaded videos as asynchronous jobs (StartFaceSearch / GetFaceSearch).

Streams: ``POST /v1/collections/{c}/streams`` starts one (:meth:`facelens.Engine.watch_stream`: the source
is opened before the answer, so a source that does not answer is a 400 ``invalid_video`` naming it); ``GET``
lists them and shows one's status; ``DELETE`` stops one; ``GET .../events`` gives its events, as
Server-Sent Events (``Accept: text/event-stream``; each event's ``id`` is its ``seq``, so a client that
reconnects with ``Last-Event-ID`` misses nothing still kept) or as JSON (``after``, ``wait_s``: a long
poll). A stream keeps running when its clients leave, until it is stopped, its source ends or is lost
for good, or the service shuts down (every stream is stopped then, and its end recorded); the streams
not stopped by a client are started again when the service starts again. At most
``MAX_STREAMS`` (``$FACELENS_MAX_STREAMS``, default 4) run at once: each takes one core's worth of
detection.

Jobs: ``POST /v1/collections/{c}/video-searches`` with the video (multipart part ``video``, or base64 in
JSON; at most the service's ``max_request_bytes``) answers 202 with the job's id once the video is known to
open; the job runs in the background, one at a time (``GET`` its status, progress and result; ``DELETE``
cancels it). The upload is deleted when the job ends.

Who sees what: starting needs the ``search`` scope on the collection; a stream or job is shown to, and
stopped by, the key that started it or a key with the ``admin`` scope on the collection (others get the
same 404 as for one that does not exist).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ...accountability.records import new_id, now
from ...errors import FacelensError, VideoDecodeError, error_status
from ...pipeline import CancelToken, cancellable
from ...video.stream import StreamOptions, StreamProcessor
from ..deps import Key, SearchCollection, Services, ServicesDep, actor, read_image_request
from ..errors import ApiError
from ..keys import ApiKey, Scope

__all__ = ["MAX_STREAMS", "StreamIn", "VideoSearchOptions", "VideoServices", "resume", "router", "shutdown"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/collections/{collection}", tags=["video"])

MAX_STREAMS = int(os.environ.get("FACELENS_MAX_STREAMS", "4"))
MAX_JOBS_KEPT = 100  # finished jobs kept for their results (the oldest forgotten first)
STREAMS_FILE = "streams.json"  # the streams to start again after a restart (in <home>/service/)
MAX_STREAMS_KEPT = 32  # ended streams kept for their status and last events
_POLL_S = 0.1  # how often an events response looks for new events
_KEEPALIVE_S = 15.0

StreamName = Annotated[str, PathParam(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-:]+$")]
JobId = Annotated[str, PathParam(min_length=1, max_length=64)]
SearchModeName = Literal["identify", "investigate"]


class _SearchFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: SearchModeName = Field(default="identify", description="identify (matches) or investigate (leads).")
    max_fpir: float | None = Field(default=None, gt=0, lt=1, description="identify: per track (default 0.003).")
    max_fmr: float | None = Field(default=None, gt=0, le=1, description="identify, instead: per comparison.")
    min_score: float | None = Field(default=None, ge=-1, le=1, description="identify, instead: a raw cosine.")
    max_results: int | None = Field(default=None, ge=1, le=4096)
    max_candidates: int | None = Field(default=None, ge=1, le=4096)
    every: int | None = Field(default=None, ge=1, le=120, description="Analyse every Nth frame.")
    purpose: str | None = Field(default=None, max_length=500, description="Why: recorded in the search log.")

    def engine_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"purpose", "source", "name"})


class StreamIn(_SearchFields):
    """A stream to start: its ``source`` (``rtsp://``, ``http(s)://``, ``udp://`` or a device path the
    service can open) and an optional ``name`` (default: a new id)."""

    source: str = Field(min_length=1, max_length=2048)
    name: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-:]+$")


class VideoSearchOptions(_SearchFields):
    """The options of a video search job (those of ``facelens video search``)."""


class _JobToken(CancelToken):
    """A job's cancel token, remembering that a cancel was asked for (the job reports ``cancelled``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.cancel_requested = False

    def cancel(self) -> bool:
        self.cancel_requested = True
        return super().cancel()


@dataclass
class _Stream:
    processor: StreamProcessor
    key_id: str
    collection: str


@dataclass
class _Job:
    job_id: str
    collection: str
    key_id: str
    path: Path
    created_at: str
    token: _JobToken
    state: str = "queued"  # queued -> running -> succeeded | failed | cancelled
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    per_frame: list[dict[str, Any]] | None = None
    error: dict[str, str] | None = None
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "collection": self.collection, "status": self.state,
                "created_at": self.created_at, "finished_at": self.finished_at, "progress": self.progress,
                "error": self.error, "result": self.result}


class VideoServices:
    """The streams and video jobs of one service (kept on ``app.state.video``)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.lock = threading.Lock()
        self.streams: dict[str, _Stream] = {}
        self.starting: set[str] = set()
        self.jobs: dict[str, _Job] = {}
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-job")
        self.job_dir = Path(services.settings.home) / "service" / "video-jobs"
        self.saved_path = Path(services.settings.home) / "service" / STREAMS_FILE
        self.closed = False
        self._owner_lock: Any = None

    # -- the streams to run again after a restart ---------------------------------------------------
    def _saved(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.saved_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            logger.exception("%s cannot be read: no stream is started again", self.saved_path)
            return {}
        return data if isinstance(data, dict) else {}

    def _write_saved(self, data: dict[str, dict[str, Any]]) -> None:
        tmp = self.saved_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # sources may hold passwords
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.saved_path)

    def remember(self, name: str, spec: dict[str, Any]) -> None:
        with self.lock:
            data = self._saved()
            data[name] = spec
            self._write_saved(data)

    def forget(self, name: str) -> None:
        with self.lock:
            data = self._saved()
            if data.pop(name, None) is not None:
                self._write_saved(data)

    def resume(self) -> None:
        """Start again the streams running when the service last stopped (as the keys that started them,
        while those keys are valid and keep the search scope). Only one process of a service does it
        (a lock file): with ``--processes N`` the others run no saved stream."""
        import fcntl

        self.saved_path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(self.saved_path.with_suffix(".lock"), "a")  # noqa: SIM115 (held for the process's life)
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            return
        self._owner_lock = lock
        for name, spec in sorted(self._saved().items()):
            if self.closed:
                return
            key = self.services.keys.get(str(spec.get("key_id")))
            collection = str(spec.get("collection"))
            if key is None or Scope.SEARCH not in key.scopes(collection):
                logger.warning("stream %s is not started again: the key that started it is revoked or lost "
                               "the search scope on %r", name, collection)
                self.forget(name)
                continue
            try:
                self.reserve(name)
            except ApiError:
                continue
            stream = None
            try:
                kwargs = dict(spec.get("options") or {})
                processor = self.services.engine.watch_stream(
                    collection, str(spec["source"]), name=name, actor=actor(key), purpose=spec.get("purpose"),
                    options=StreamOptions(), **kwargs)
                stream = _Stream(processor=processor, key_id=key.key_id, collection=collection)
                logger.info("stream %s started again", name)
            except (FacelensError, KeyError, TypeError) as exc:
                logger.warning("stream %s could not be started again: %s", name, exc)
            finally:
                self.started(name, stream)

    # -- streams ----------------------------------------------------------------------------------
    def reserve(self, name: str) -> None:
        with self.lock:
            if self.closed:
                raise ApiError(503, "shutting_down", "the service is shutting down")
            current = self.streams.get(name)
            if name in self.starting or (current is not None and not current.processor.done):
                raise ApiError(409, "stream_exists",
                               f"a stream named {name!r} is running; stop it or pick another name")
            running = len(self.starting) + sum(not s.processor.done for s in self.streams.values())
            if running >= MAX_STREAMS:
                raise ApiError(409, "too_many_streams", (
                    f"this service runs at most {MAX_STREAMS} streams at once ($FACELENS_MAX_STREAMS); stop one first"))
            self.starting.add(name)

    def started(self, name: str, stream: _Stream | None) -> None:
        with self.lock:
            self.starting.discard(name)
            if stream is None:
                return
            closed = self.closed
            self.streams[name] = stream
        if closed:  # the service began shutting down while it opened: stop it too
            stream.processor.stop()
            return
        with self.lock:
            ended = [n for n, s in self.streams.items() if s.processor.done]
            for n in ended[: max(0, len(ended) - MAX_STREAMS_KEPT)]:
                del self.streams[n]

    def stream(self, collection: str, name: str, key: ApiKey) -> _Stream:
        with self.lock:
            s = self.streams.get(name)
        if s is None or s.collection != collection or not _may_see(key, collection, s.key_id):
            raise ApiError(404, "stream_not_found", f"no stream named {name!r} on collection {collection!r}")
        return s

    def list_streams(self, collection: str, key: ApiKey) -> list[_Stream]:
        with self.lock:
            found = list(self.streams.values())
        return [s for s in found if s.collection == collection and _may_see(key, collection, s.key_id)]

    def stop_all(self) -> None:
        """Stop every stream and cancel every job (the service shuts down)."""
        with self.lock:
            self.closed = True
            streams = list(self.streams.values())
            jobs = list(self.jobs.values())
        for j in jobs:
            j.token.cancel()
        threads = [threading.Thread(target=s.processor.stop, daemon=True) for s in streams]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)
        self.executor.shutdown(wait=True, cancel_futures=True)
        for j in jobs:
            with contextlib.suppress(OSError):
                j.path.unlink(missing_ok=True)
        if self._owner_lock is not None:
            self._owner_lock.close()  # another process (or the next service here) may run them now
            self._owner_lock = None

    # -- jobs -------------------------------------------------------------------------------------
    def job(self, collection: str, job_id: str, key: ApiKey) -> _Job:
        with self.lock:
            j = self.jobs.get(job_id)
        if j is None or j.collection != collection or not _may_see(key, collection, j.key_id):
            raise ApiError(404, "job_not_found", f"no video search {job_id!r} on collection {collection!r}")
        return j

    def add_job(self, job: _Job) -> None:
        with self.lock:
            if self.closed:
                raise ApiError(503, "shutting_down", "the service is shutting down")
            self.jobs[job.job_id] = job
            done = [k for k, j in self.jobs.items() if j.finished_at is not None]
            for k in done[: max(0, len(done) - MAX_JOBS_KEPT)]:
                del self.jobs[k]

    def run_job(self, job: _Job, options: VideoSearchOptions, key: ApiKey, purpose: str | None) -> None:
        """The job's thread: search the uploaded video, keep the result, delete the upload."""
        engine = self.services.engine

        def progress(p: Any) -> None:
            job.progress = {"time_s": round(p.time_s, 3), "duration_s": p.duration_s, "tracks": p.tracks,
                            "frames_decoded": p.frames_decoded, "elapsed_s": round(p.elapsed_s, 3),
                            "fraction": (round(min(p.time_s / p.duration_s, 1.0), 4) if p.duration_s else None)}

        try:
            if job.token.cancel_requested:
                raise _Cancelled()
            job.state = "running"
            with cancellable(job.token):
                result = engine.search_video(job.collection, job.path, progress=progress, actor=actor(key),
                                             purpose=purpose, **options.engine_kwargs())
            job.result = result.to_dict()
            job.per_frame = result.per_frame()
            job.state = "succeeded"
        except _Cancelled:
            job.state = "cancelled"
        except FacelensError as exc:
            status, code = error_status(exc)
            cancelled = job.token.cancel_requested
            job.state = "cancelled" if cancelled else "failed"
            job.error = {"code": "cancelled" if cancelled else code,
                         "message": str(getattr(exc, "message", None) or exc).replace(str(job.path), "the upload")}
        except Exception:
            logger.exception("video search job %s failed", job.job_id)
            job.state = "failed"
            job.error = {"code": "internal_error", "message": "internal error (the service log has the details)"}
        finally:
            job.finished_at = now()
            with contextlib.suppress(OSError):
                job.path.unlink(missing_ok=True)


class _Cancelled(Exception):
    pass


def _may_see(key: ApiKey, collection: str, owner: str) -> bool:
    return key.key_id == owner or Scope.ADMIN in key.scopes(collection)


def video_services(request: Request) -> VideoServices:
    state = request.app.state
    vs: VideoServices | None = getattr(state, "video", None)
    if vs is None:
        with _INIT_LOCK:
            vs = getattr(state, "video", None)
            if vs is None:
                vs = VideoServices(state.services)
                state.video = vs
    return vs


_INIT_LOCK = threading.Lock()


async def resume(app: FastAPI) -> None:
    """The lifespan's start: start again, in the background, the streams saved when they were started
    (``<home>/service/streams.json``, mode 0600: sources may hold passwords) and not stopped since."""
    vs = VideoServices(app.state.services)
    app.state.video = vs
    threading.Thread(target=vs.resume, name="streams-resume", daemon=True).start()


async def shutdown(app: FastAPI) -> None:
    """The lifespan's end: stop every stream (their ends recorded) and job, before the engine closes."""
    vs: VideoServices | None = getattr(app.state, "video", None)
    if vs is not None:
        await anyio.to_thread.run_sync(vs.stop_all)


# -- streams ---------------------------------------------------------------------------------------

@router.post("/streams", status_code=201, summary="Start following a live stream")
async def start_stream(body: StreamIn, collection: SearchCollection, key: Key, services: ServicesDep,
                       request: Request) -> dict[str, Any]:
    """Open ``source`` and follow the faces on it, searching each track in the collection; answers the
    stream's status once the source is open (400 ``invalid_video`` when it cannot be opened)."""
    vs = video_services(request)
    _check_source(body.source)
    purpose = services.purpose(collection, body.purpose)
    name = body.name or new_id()[:12]
    vs.reserve(name)
    stream: _Stream | None = None
    try:
        kwargs = body.engine_kwargs()
        every = kwargs.pop("every", None)
        processor = await services.calls(lambda: services.engine.watch_stream(
            collection, body.source, name=name, actor=actor(key), purpose=purpose, every=every,
            options=StreamOptions(), **kwargs), recorded=True)
        stream = _Stream(processor=processor, key_id=key.key_id, collection=collection)
        vs.remember(name, {"collection": collection, "source": body.source, "key_id": key.key_id,
                           "purpose": purpose, "options": {**kwargs, **({"every": every} if every else {})}})
    finally:
        vs.started(name, stream)
    return processor.status().to_dict()


_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "rtp://", "srt://")


def _check_source(source: str) -> None:
    """A client may name a network source or a camera device, never a file of the server's."""
    if not (source.lower().startswith(_SCHEMES) or re.fullmatch(r"/dev/video[0-9]{1,3}", source)):
        raise ApiError(422, "invalid_request", (
            f"source must be an {', '.join(s.rstrip(':/') for s in _SCHEMES)} URL or a camera device "
            f"(/dev/videoN); files of the server are not served as streams"))


@router.get("/streams", summary="The streams of a collection")
async def list_streams(collection: SearchCollection, key: Key, request: Request) -> dict[str, Any]:
    vs = video_services(request)
    return {"collection": collection, "max_streams": MAX_STREAMS,
            "streams": [s.processor.status().to_dict() for s in vs.list_streams(collection, key)]}


@router.get("/streams/{name}", summary="A stream's status")
async def stream_status(name: StreamName, collection: SearchCollection, key: Key, request: Request) -> dict[str, Any]:
    """Its state, frames decoded, analysed and dropped, fps in and out, latencies, open tracks."""
    return video_services(request).stream(collection, name, key).processor.status().to_dict()


@router.delete("/streams/{name}", summary="Stop a stream")
async def stop_stream(name: StreamName, collection: SearchCollection, key: Key, request: Request) -> dict[str, Any]:
    """Stop it (its open tracks end); answers its final status."""
    vs = video_services(request)
    s = vs.stream(collection, name, key)
    status = await anyio.to_thread.run_sync(s.processor.stop)
    vs.forget(name)  # not started again after a restart
    return status.to_dict()


@router.get("/streams/{name}/events", summary="A stream's events (JSON, or Server-Sent Events)",
            responses={200: {"content": {"text/event-stream": {}, "application/json": {}}}})
async def stream_events(name: StreamName, collection: SearchCollection, key: Key, request: Request,
                        after: Annotated[int, Query(ge=0, description="Only events with a larger seq.")] = 0,
                        wait_s: Annotated[float, Query(ge=0, le=30, description=(
                            "JSON: wait up to this long for an event when there is none yet."))] = 0.0) -> Any:
    """With ``Accept: text/event-stream``: every event from ``after`` (or ``Last-Event-ID``) on, as they
    come, until the stream ends or the client leaves (``event``: the kind, ``id``: the seq, ``data``:
    the event's JSON). Otherwise JSON: ``events`` after ``after``, ``next`` (the ``after`` of the next
    poll) and the stream's ``state``."""
    processor = video_services(request).stream(collection, name, key).processor
    if "text/event-stream" in request.headers.get("accept", ""):
        last = request.headers.get("last-event-id", "")
        start = int(last) if last.isdigit() else after
        return StreamingResponse(_sse(request, processor, start), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    deadline = time.monotonic() + wait_s
    events = processor.events(after)
    while not events and not processor.done and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)
        events = processor.events(after)
    return {"stream": name, "state": processor.status().state, "events": [e.to_dict() for e in events],
            "next": events[-1].seq if events else after}


async def _sse(request: Request, processor: StreamProcessor, after: int) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    beat = time.monotonic()
    while True:
        events = processor.events(after)
        for e in events:
            yield f"id: {e.seq}\nevent: {e.kind}\ndata: {json.dumps(e.to_dict())}\n\n"
            after = e.seq
        if events:
            beat = time.monotonic()
        if processor.done and not processor.events(after):
            return
        if await request.is_disconnected():
            return
        if time.monotonic() - beat > _KEEPALIVE_S:
            yield ": keep-alive\n\n"
            beat = time.monotonic()
        await asyncio.sleep(_POLL_S)


# -- stored video: jobs ----------------------------------------------------------------------------

@router.post("/video-searches", status_code=202, summary="Search a video for the collection's faces (a job)")
async def start_video_search(collection: SearchCollection, key: Key, services: ServicesDep,
                             request: Request) -> dict[str, Any]:
    """Upload a video (multipart part ``video`` with the options as fields, or JSON with ``video``
    base64-encoded); answers 202 with the job (``job_id``, ``status``) once the video is known to open
    (400 ``invalid_video`` when it does not). Poll ``GET .../video-searches/{job_id}``."""
    vs = video_services(request)
    options, blobs = await read_image_request(request, VideoSearchOptions, ("video",),
                                              services.settings.request_timeout_s)
    purpose = services.purpose(collection, options.purpose)
    job_id = new_id()
    vs.job_dir.mkdir(parents=True, exist_ok=True)
    path = vs.job_dir / f"{job_id}.video"

    def save_and_check() -> None:
        from ...video.decode import open_video

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blobs["video"])
        try:
            with open_video(path, max_pixels=services.engine.config.max_pixels):
                pass
            services.engine._search_setup(collection, purpose=purpose, **_setup_kwargs(options))
        except VideoDecodeError as exc:
            path.unlink(missing_ok=True)
            raise VideoDecodeError(str(exc).removeprefix(f"{exc.source}: "), source="the upload") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    await anyio.to_thread.run_sync(save_and_check)
    job = _Job(job_id=job_id, collection=collection, key_id=key.key_id, path=path, created_at=now(),
               token=_JobToken(reason="the video search was cancelled by its client"))
    vs.add_job(job)
    vs.executor.submit(vs.run_job, job, options, key, purpose)
    return {"job_id": job_id, "status": job.state, "collection": collection}


def _setup_kwargs(options: VideoSearchOptions) -> dict[str, Any]:
    kw = options.engine_kwargs()
    kw.pop("every", None)
    return {"mode": kw.pop("mode", "identify"), "max_fmr": kw.get("max_fmr"), "max_fpir": kw.get("max_fpir"),
            "min_score": kw.get("min_score"), "max_results": kw.get("max_results"),
            "max_candidates": kw.get("max_candidates")}


@router.get("/video-searches", summary="The video search jobs of a collection")
async def list_video_searches(collection: SearchCollection, key: Key, request: Request) -> dict[str, Any]:
    vs = video_services(request)
    with vs.lock:
        jobs = list(vs.jobs.values())
    return {"collection": collection, "jobs": [{k: v for k, v in j.to_dict().items() if k != "result"}
                                               for j in jobs if j.collection == collection
                                               and _may_see(key, collection, j.key_id)]}


@router.get("/video-searches/{job_id}", summary="A video search job: status, progress, result")
async def get_video_search(job_id: JobId, collection: SearchCollection, key: Key, request: Request,
                           format: Annotated[Literal["facelens", "rekognition"], Query(description=(
                               "facelens: tracks (docs/video.md); rekognition: GetFaceSearch's shape, "
                               "one record per sampled box (Persons[{Timestamp, Person, FaceMatches}])"))]
                           = "facelens") -> dict[str, Any]:
    job = video_services(request).job(collection, job_id, key)
    if format == "facelens":
        return job.to_dict()
    return _rekognition(job)


@router.delete("/video-searches/{job_id}", summary="Cancel a video search job")
async def cancel_video_search(job_id: JobId, collection: SearchCollection, key: Key,
                              request: Request) -> dict[str, Any]:
    """Cancel it (a job already finished is answered as it is); the upload is deleted."""
    job = video_services(request).job(collection, job_id, key)
    if job.finished_at is None:
        job.token.cancel()
        deadline = time.monotonic() + 10
        while job.finished_at is None and job.state == "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    return {k: v for k, v in job.to_dict().items() if k != "result"}


_REK_STATUS = {"queued": "IN_PROGRESS", "running": "IN_PROGRESS", "succeeded": "SUCCEEDED", "failed": "FAILED",
               "cancelled": "FAILED"}


def _rekognition(job: _Job) -> dict[str, Any]:
    """GetFaceSearch's shape: ``Persons`` by time; ``Similarity`` is facelens's cosine score x 100 (not
    Rekognition's scale), with the false-match rate beside it."""
    out: dict[str, Any] = {"JobId": job.job_id, "JobStatus": _REK_STATUS[job.state]}
    if job.error:
        out["StatusMessage"] = job.error["message"]
    if job.result is None or job.per_frame is None:
        return out
    video = job.result["video"]
    w, h = float(video["width"]), float(video["height"])
    out["VideoMetadata"] = {"Codec": video["codec"], "DurationMillis": int(round((video["duration_s"] or 0) * 1000)),
                            "Format": video["container"], "FrameRate": video["fps"], "FrameHeight": video["height"],
                            "FrameWidth": video["width"]}
    persons = []
    for r in job.per_frame:
        left, top, right, bottom = r["person"]["bbox"]
        matches = [{"Similarity": round(100 * float(m["score"]), 2), "FalseMatchRate": m.get("fmr"),
                    "Face": {"FaceId": m.get("face_id"), "ExternalImageId": m.get("external_image_id"),
                             "PersonId": m.get("person_id")}} for m in r["face_matches"]]
        persons.append({"Timestamp": r["timestamp_ms"], "Person": {
            "Index": r["person"]["index"], "BoundingBox": {"Left": round(left / w, 4), "Top": round(top / h, 4),
                                                          "Width": round((right - left) / w, 4),
                                                          "Height": round((bottom - top) / h, 4)}},
            "FaceMatches": matches})
    out["Persons"] = persons
    return out

