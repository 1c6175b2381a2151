"""Live streams: faces of an RTSP, HTTP (MPEG-TS, MJPEG), UDP or camera source followed and searched as they
appear (Rekognition's stream processors, but one event per track rather than per frame).

Three threads per stream. The **reader** opens the source with PyAV and decodes every frame (H.264 cannot
skip any); every ``every``-th decoded frame is handed to the **analysis** through a slot that holds one
frame: when the analysis is still busy with the previous one, the frame waiting in the slot is replaced
by the newer one and counted as dropped. Nothing queues, so a slow machine analyses fewer frames but
never falls behind the source, and memory does not grow. The analysis detects faces (not on frames where
nothing moved), tracks them (:class:`facelens.video.tracking.FaceTracker`) and embeds a few good faces
per track, which the **search** thread searches in the collection (detection goes on meanwhile; one
search in flight per track), emitting :class:`StreamEvent`\\ s: ``track_started``, ``track_identified``
(identify mode: the first look that matches), ``track_candidates`` (investigate mode: the track's looks
searched together, leads for review), ``track_ended``, and the source's own (``source_lost``,
``source_back``, ``stream_ended``).

When a live source drops, the reader reconnects with a growing backoff until ``reconnect_for_s`` have
passed without a frame, then the stream ends in state ``failed`` with the reason. A file (or a source
that ends cleanly without ``reconnect``) ends in state ``ended``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import numpy.typing as npt

from ..accountability.records import now
from ..errors import FacelensError, InvalidArgumentError, VideoDecodeError
from ..quality import refusal_reasons
from ..types import Face, QualityFilter, SearchMode, SearchResult
from .decode import DecodedFrame, _is_url, _reason
from .pipeline import face_rank, same_person_score
from .tracking import Assignment, FaceTracker, TrackState

if TYPE_CHECKING:
    from ..accountability.actor import Actor
    from ..engine import Engine

__all__ = ["StreamEvent", "StreamOptions", "StreamProcessor", "StreamStatus", "redact_source"]

log = logging.getLogger(__name__)

_RANK_GAIN = 1.15  # a track is embedded again only for a face ranked this much better than its best looked-at one
_EMBED_SPACING_S = 0.3  # a track's looks are of faces at least this far apart in time
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_VIDEO = {"image2", "tty"}  # formats FFmpeg opens that are a still image or text, not a video
_RECHECK_S = 1.0  # a looked-at track's face is compared with its looks at least this often (someone else?)
_RATE_WINDOW_S = 5.0  # fps in and out are measured over this window
EventCallback = Callable[["StreamEvent"], None]


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How a live source is read and analysed.

    ``every``: hand every Nth decoded frame to the analysis (1: all; 2 at 30 fps: 15 analysed frames per
    second, a face seen within 67 ms of appearing). ``still_threshold``/``max_still_s``: as in
    :class:`facelens.video.VideoOptions` (a frame whose grey thumbnail differs from the last detected one
    by less than this many grey levels is not detected; at least every ``max_still_s`` one is).
    ``embeddings_per_track``: looks (searches of one embedding each) a track gets at most; in identify
    mode each look is made at ``max_fpir / embeddings_per_track`` (or ``max_fmr / ...``), so that a
    stranger's track matches anyone with probability at most ``max_fpir`` however many looks it gets.
    ``quality_filter``: the faces that may be looked at. ``min_detections``: a track is announced
    (``track_started``) after this many detections. ``max_gap_s``: a face not seen this long has left.
    ``rtsp_transport``: ``"udp"``, ``"tcp"`` or None (FFmpeg's default: UDP, then TCP).
    ``open_timeout_s``/``read_timeout_s``: how long opening the source, and then waiting for data, may
    take. ``reconnect``: reopen a live source that drops; give up after ``reconnect_for_s`` without a
    frame, waiting ``backoff_s`` after the first failed attempt, doubling up to ``backoff_max_s``.
    ``max_events``: events kept for readers that poll (older ones are forgotten; the events file and
    callback see all). ``pace``: read frames no faster than their timestamps (None: for a file, which
    would otherwise be read as fast as it decodes; a live source sets its own pace).
    """

    every: int = 2
    still_threshold: float = 1.5
    max_still_s: float = 1.0
    embeddings_per_track: int = 3
    quality_filter: QualityFilter = QualityFilter.LOW
    min_detections: int = 2
    max_gap_s: float = 1.0
    rtsp_transport: str | None = None
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    reconnect: bool = True
    reconnect_for_s: float = 60.0
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    max_events: int = 1000
    pace: bool | None = None

    def __post_init__(self) -> None:
        if self.every < 1 or self.embeddings_per_track < 1 or self.min_detections < 1 or self.max_events < 1:
            raise InvalidArgumentError("every, embeddings_per_track, min_detections and max_events must be >= 1")
        positive = {"open_timeout_s": self.open_timeout_s, "read_timeout_s": self.read_timeout_s,
                    "backoff_s": self.backoff_s, "backoff_max_s": self.backoff_max_s, "max_gap_s": self.max_gap_s}
        for name, value in positive.items():
            if not value > 0:
                raise InvalidArgumentError(f"{name} must be > 0, got {value}")
        if self.reconnect_for_s < 0:
            raise InvalidArgumentError(f"reconnect_for_s must be >= 0, got {self.reconnect_for_s}")
        if self.rtsp_transport not in (None, "udp", "tcp"):
            raise InvalidArgumentError(f"rtsp_transport must be 'udp', 'tcp' or None, got {self.rtsp_transport!r}")
        object.__setattr__(self, "quality_filter", QualityFilter.parse(self.quality_filter))


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """Something that happened on a stream. ``seq``: 1, 2, ... per stream. ``kind``: ``track_started``,
    ``track_identified``, ``track_candidates``, ``track_ended``, ``source_lost``, ``source_back`` or
    ``stream_ended``. ``time``: when it was emitted (UTC, ISO 8601). For a track's events: ``track_id``,
    ``stream_time_s`` (the frame's presentation time from the source, in seconds from the first frame of
    the current connection), ``captured_at`` (when that frame arrived from the source, UTC) and
    ``latency_ms`` (from that arrival to this event: decoding wait, detection, embedding, search and
    record; the encoder's and network's delay before arrival is not seen here). ``data``: the rest (the
    box, the matches or candidates with their operating point and log entry, a track's times, an
    error)."""

    seq: int
    kind: str
    stream: str
    time: str
    track_id: int | None = None
    stream_time_s: float | None = None
    captured_at: str | None = None
    latency_ms: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "stream": self.stream, "time": self.time,
                "track_id": self.track_id,
                "stream_time_s": None if self.stream_time_s is None else round(self.stream_time_s, 3),
                "captured_at": self.captured_at,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1), **self.data}


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """Where a stream is. ``state``: ``running``, ``reconnecting``, ``stopping``, ``stopped`` (by
    :meth:`StreamProcessor.stop`), ``ended`` (the source ended) or ``failed`` (``error`` says why).
    Frames: ``frames_decoded`` (all), ``frames_offered`` (every ``every``-th, handed to the analysis),
    ``frames_analysed``, ``frames_dropped`` (offered, replaced by a newer one before the analysis took
    them), ``frames_still`` (analysed without detection: nothing moved). ``fps_in``/``fps_out``: decoded
    and analysed frames per second over the last 5 s. ``frame_latency_ms``/``match_latency_ms``: p50 and
    p95 of the time from a frame's arrival to the end of its analysis, and to each match event, over the
    last 1,000. ``tracks_open``: faces followed now."""

    name: str
    collection: str
    source: str
    mode: str
    state: str
    started_at: str
    frames_decoded: int
    frames_offered: int
    frames_analysed: int
    frames_dropped: int
    frames_still: int
    fps_in: float
    fps_out: float
    frame_latency_ms: dict[str, float | None]
    match_latency_ms: dict[str, float | None]
    tracks_open: int
    tracks_total: int
    tracks_identified: int
    reconnects: int
    last_event: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def redact_source(source: str) -> str:
    """The source as it may be shown and logged: a URL without its password (``rtsp://user:***@host/``)."""
    if not _is_url(source):
        return source
    try:
        parts = urllib.parse.urlsplit(source)
        if parts.password is None:
            return source
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # not a URL Python can parse (FFmpeg will refuse it too): hide any user info
        return re.sub(r"//[^/]*@", "//***@", source)


def _percentiles(values: collections.deque[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    arr = np.fromiter(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(arr, 50)), 1), "p95": round(float(np.percentile(arr, 95)), 1)}


def _rate(times: collections.deque[float], at: float) -> float:
    recent = [t for t in times if at - t <= _RATE_WINDOW_S]
    if len(recent) < 2:
        return 0.0
    span = recent[-1] - recent[0]
    return round((len(recent) - 1) / span, 2) if span > 0 else 0.0


class _Offered:
    """A frame handed to the analysis: the decoded frame, which connection it came on, and when it
    arrived (wall clock for the events, monotonic for latencies)."""

    __slots__ = ("arrived_mono", "arrived_wall", "connection", "frame")

    def __init__(self, frame: DecodedFrame, connection: int) -> None:
        self.frame = frame
        self.connection = connection
        self.arrived_mono = time.monotonic()
        self.arrived_wall = time.time()


class _Slot:
    """Holds at most one frame: the newest wins; a frame replaced before it was taken is dropped."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: _Offered | None = None
        self._closed = False
        self.dropped = 0

    def put(self, item: _Offered) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
                self._item.frame.release()
            self._item = item
            self._cond.notify()

    def take(self, timeout: float) -> _Offered | None:
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout=timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed and self._item is None


class _LiveTrack:
    """A track being followed (private to the worker)."""

    __slots__ = ("announced", "best", "checked_s", "first_wall", "hits", "identified", "last_look_s", "look_rank",
                 "looks", "matches", "pending", "searched", "seen_s", "start_s", "vectors")

    def __init__(self, start_s: float, first_wall: float) -> None:
        self.start_s = start_s
        self.first_wall = first_wall
        self.hits = 0
        self.announced = False
        self.looks = 0
        self.look_rank = 0.0  # the rank of the best face looked at
        self.last_look_s = -math.inf
        self.checked_s = start_s  # when its identity was last checked (a look, or a comparison with its looks)
        self.seen_s = start_s  # the last analysed frame showing it
        self.identified = False
        self.pending: concurrent.futures.Future[None] | None = None  # its look being searched
        self.searched = False  # investigate: its looks were searched
        self.matches: list[dict[str, Any]] = []
        self.vectors: list[npt.NDArray[np.float32]] = []  # investigate: the looks, searched together
        self.best: tuple[float, Face, npt.NDArray[np.uint8]] | None = None  # (rank, face, frame) for the crop


class StreamProcessor:
    """One live source followed and searched in one collection (see the module's docstring). Made and
    started by :meth:`facelens.Engine.watch_stream`; :meth:`status`, :meth:`events`, :meth:`stop`.

    ``search`` holds the search options (``mode``, ``max_fpir``, ``max_fmr``, ``min_score``,
    ``max_results``, ``max_candidates``) as for :meth:`facelens.Engine.search_faces_by_embedding`.
    ``on_event`` is called in the analysis thread with every event (keep it quick); ``events_path``: a
    file every event is appended to as a JSON line.
    """

    def __init__(self, engine: Engine, collection: str, source: str | os.PathLike[str], *, name: str,
                 search: dict[str, Any], options: StreamOptions, actor: Actor | None, purpose: str | None,
                 on_event: EventCallback | None = None, events_path: str | Path | None = None) -> None:
        self.engine = engine
        self.collection = collection
        self.source = os.fspath(source)
        self.shown_source = redact_source(self.source)
        self.name = name
        self.search = search
        self.mode = SearchMode.parse(search.get("mode") or SearchMode.IDENTIFY)
        self.options = options
        self.actor = actor
        self.purpose = purpose
        self.on_event = on_event
        self.events_path = Path(events_path) if events_path is not None else None
        self._events_file: TextIO | None = None
        self.started_at = now()
        self._slot = _Slot()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._events: collections.deque[StreamEvent] = collections.deque(maxlen=options.max_events)
        self._events_cond = threading.Condition(self._lock)
        self._seq = 0
        self._state = "starting"
        self._error: str | None = None
        self._container: Any = None
        self._connection = 0
        self._reconnects = 0
        self._decoded = self._offered = self._analysed = self._still = 0
        self._tracks_total = self._tracks_identified = 0
        self._tracks_open = 0
        self._in_times: collections.deque[float] = collections.deque(maxlen=512)
        self._out_times: collections.deque[float] = collections.deque(maxlen=512)
        self._frame_latency: collections.deque[float] = collections.deque(maxlen=1000)
        self._match_latency: collections.deque[float] = collections.deque(maxlen=1000)
        self._searcher = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                               thread_name_prefix=f"stream-{name}-search")
        self._reader: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._ended_reason = "stopped"
        self._same: float | None = None

    # -- the public face ----------------------------------------------------------------------------
    def start(self) -> None:
        """Open the source (raises VideoDecodeError naming it when it cannot be opened in
        ``open_timeout_s`` or holds no video), then start the reader and analysis threads."""
        if self.events_path is not None:
            try:
                self._events_file = open(self.events_path, "a", encoding="utf-8")  # noqa: SIM115 (closed at the end)
            except OSError as e:
                raise InvalidArgumentError(f"cannot write the events file {self.events_path}: {_reason(e)}") from None
        try:
            self._container = self._open()
        except BaseException:
            if self._events_file is not None:
                self._events_file.close()
            raise
        self._connection = 1
        self._state = "running"
        self._reader = threading.Thread(target=self._read_forever, name=f"stream-{self.name}-read", daemon=True)
        self._worker = threading.Thread(target=self._work_forever, name=f"stream-{self.name}-work", daemon=True)
        self._worker.start()
        self._reader.start()

    def stop(self, timeout_s: float = 10.0) -> StreamStatus:
        """Stop reading and analysing (open tracks end with ``track_ended``), and return the final
        status. Waits up to ``timeout_s`` for the threads (a source stalled in a read answers within
        ``read_timeout_s``)."""
        with self._lock:
            if self._state in ("running", "reconnecting", "starting"):
                self._state = "stopping"
        self._stop.set()
        self._slot.close()
        for t in (self._reader, self._worker):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=timeout_s)
        return self.status()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the stream has ended (stopped, the source ended, or failed); returns whether it has."""
        worker = self._worker
        if worker is None:
            return True
        worker.join(timeout=timeout_s)
        return not worker.is_alive()

    @property
    def done(self) -> bool:
        """Whether the stream has ended (its final event is emitted)."""
        with self._lock:
            return self._state in ("stopped", "ended", "failed")

    def status(self) -> StreamStatus:
        at = time.monotonic()
        with self._lock:
            return StreamStatus(
                name=self.name, collection=self.collection, source=self.shown_source, mode=self.mode.value,
                state=self._state, started_at=self.started_at, frames_decoded=self._decoded,
                frames_offered=self._offered, frames_analysed=self._analysed, frames_dropped=self._slot.dropped,
                frames_still=self._still, fps_in=_rate(self._in_times, at), fps_out=_rate(self._out_times, at),
                frame_latency_ms=_percentiles(self._frame_latency),
                match_latency_ms=_percentiles(self._match_latency), tracks_open=self._tracks_open,
                tracks_total=self._tracks_total, tracks_identified=self._tracks_identified,
                reconnects=self._reconnects, last_event=self._seq, error=self._error)

    def events(self, after: int = 0, *, wait_s: float = 0.0) -> list[StreamEvent]:
        """The kept events with ``seq > after``, oldest first; waits up to ``wait_s`` for one when there
        is none yet (and the stream has not ended)."""
        with self._events_cond:
            if wait_s > 0:
                self._events_cond.wait_for(lambda: self._seq > after or self._state in ("stopped", "ended", "failed"),
                                           timeout=wait_s)
            return [e for e in self._events if e.seq > after]

    # -- the source -----------------------------------------------------------------------------------
    def _open(self) -> Any:
        import av

        o = self.options
        options: dict[str, str] = {}
        fmt: str | None = None
        src = self.source
        if src.startswith("rtsp://") or src.startswith("rtsps://"):
            if o.rtsp_transport:
                options["rtsp_transport"] = o.rtsp_transport
        if _CONTROL.search(src) or not src.isprintable():
            raise VideoDecodeError("the source's name holds control or unprintable characters",
                                   source=ascii(self.shown_source))
        try:
            src.encode("utf-8")
        except UnicodeEncodeError:
            raise VideoDecodeError("the source's name is not valid text", source=ascii(self.shown_source)) from None
        if src.startswith("/dev/video"):
            fmt = "v4l2"
        elif not _is_url(src):
            if not os.path.exists(src):
                raise VideoDecodeError("no such file or device", source=self.shown_source)
        try:
            container = av.open(src, mode="r", format=fmt, options=options,
                                timeout=(o.open_timeout_s, o.read_timeout_s))
        except (av.FFmpegError, OSError, UnicodeError, ValueError) as e:
            raise VideoDecodeError(f"the source cannot be opened ({_reason(e)}; waited up to {o.open_timeout_s:g} s)",
                                   source=self.shown_source) from None
        try:
            fmt_name = str(container.format.name)
            if fmt_name in _NOT_VIDEO or fmt_name.endswith("_pipe"):
                raise VideoDecodeError(f"the source cannot be opened (not a video: FFmpeg reads it as {fmt_name})",
                                       source=self.shown_source)
            streams = container.streams.video
            if not streams:
                raise VideoDecodeError("the source holds no video stream", source=self.shown_source)
            stream = streams[0]
            ctx = stream.codec_context
            width, height = int(ctx.width or 0), int(ctx.height or 0)
            if width * height > self.engine.config.max_pixels:
                raise VideoDecodeError(f"frames are {width}x{height}, over the limit of "
                                       f"{self.engine.config.max_pixels:,} pixels", source=self.shown_source)
            stream.thread_type = "SLICE"  # frame threads would hold frames back: latency
        except BaseException:
            container.close()
            raise
        return container

    def _read_forever(self) -> None:
        """The reader thread: decode, offer every Nth frame, reconnect when a live source drops."""
        o = self.options
        live = _is_url(self.source) or self.source.startswith("/dev/")
        try:
            while not self._stop.is_set():
                error = self._read_connection(self._container)
                with self._lock:
                    self._container = None
                if self._stop.is_set():
                    break
                if not (live and o.reconnect):
                    self._ended_reason = "ended" if error is None else "failed"
                    self._error = error
                    break
                self._emit("source_lost", data={"reason": error or "the source ended"})
                with self._lock:
                    self._state = "reconnecting"
                container = self._reconnect(error)
                if container is None:
                    break
                with self._lock:
                    self._container = container
                    self._connection += 1
                    self._reconnects += 1
                    if self._state == "reconnecting":
                        self._state = "running"
                self._emit("source_back", data={"reconnects": self._reconnects})
        except Exception as e:  # never leave the stream hanging: end it, saying why
            log.exception("stream %s: the reader failed", self.name)
            self._ended_reason, self._error = "failed", f"the reader failed: {e}"
        finally:
            self._slot.close()

    def _read_connection(self, container: Any) -> str | None:
        """Decode one connection until it ends (None), fails (the reason) or the stream is stopped."""
        import av

        every = self.options.every
        pace = self.options.pace if self.options.pace is not None else not (
            _is_url(self.source) or self.source.startswith("/dev/"))
        began = time.monotonic()
        try:
            stream = container.streams.video[0]
            tb: Fraction = stream.time_base or Fraction(1, 90_000)
            first: int | None = None
            index = 0
            last = -math.inf
            for frame in container.decode(stream):
                if self._stop.is_set():
                    return None
                pts = frame.pts
                if pts is not None and first is None:
                    first = pts
                t = float((pts - first) * tb) if pts is not None and first is not None else max(last, 0.0) + 1 / 30
                t = max(t, last + 1e-6)
                last = t
                if pace and (ahead := t - (time.monotonic() - began)) > 0 and self._stop.wait(ahead):
                    return None
                with self._lock:
                    self._decoded += 1
                    self._in_times.append(time.monotonic())
                if index % every == 0:
                    with self._lock:
                        self._offered += 1
                    self._slot.put(_Offered(DecodedFrame(frame, index, t), self._connection))
                index += 1
            return None
        except (av.FFmpegError, OSError) as e:
            return f"reading failed: {_reason(e)}"
        finally:
            container.close()

    def _reconnect(self, error: str | None) -> Any:
        """Reopen the source with a growing backoff; None when stopped or after ``reconnect_for_s``
        without success (the stream then fails)."""
        o = self.options
        deadline = time.monotonic() + o.reconnect_for_s
        wait = o.backoff_s
        last_error = error or "the source ended"
        while not self._stop.is_set():
            if time.monotonic() >= deadline:
                self._ended_reason = "failed"
                self._error = (f"the source was lost ({last_error}) and did not come back within "
                               f"{o.reconnect_for_s:g} s")
                return None
            if self._stop.wait(min(wait, max(deadline - time.monotonic(), 0.0))):
                return None
            wait = min(wait * 2, o.backoff_max_s)
            try:
                return self._open()
            except VideoDecodeError as e:
                last_error = str(e).removeprefix(f"{self.shown_source}: ")
        return None

    # -- the analysis ---------------------------------------------------------------------------------
    def _work_forever(self) -> None:
        tracker = FaceTracker(max_gap_s=self.options.max_gap_s)
        tracks: dict[int, _LiveTrack] = {}
        connection = 1
        last_thumb: npt.NDArray[np.float32] | None = None
        last_detect_s = -math.inf
        try:
            while True:
                item = self._slot.take(timeout=0.5)
                if item is None:
                    if self._slot.closed:
                        break
                    continue
                try:
                    if item.connection != connection:  # the source came back: its clock starts again
                        self._end_tracks(tracker.finish(), tracks, None)
                        connection, last_thumb, last_detect_s = item.connection, None, -math.inf
                    last_thumb, last_detect_s = self._analyse(item, tracker, tracks, last_thumb, last_detect_s)
                finally:
                    item.frame.release()
        except Exception as e:
            log.exception("stream %s: the analysis failed", self.name)
            self._ended_reason, self._error = "failed", f"the analysis failed: {e}"
            self._stop.set()
        finally:
            try:
                self._end_tracks(tracker.finish(), tracks, None)
            except Exception:
                log.exception("stream %s: ending its tracks failed", self.name)
            self._searcher.shutdown(wait=True)
            self._finish()

    def _finish(self) -> None:
        reason = self._ended_reason
        if reason == "failed" and self._error is None:
            self._error = "the stream failed"
        status = self.status()
        self._emit("stream_ended", data={"state": reason, "error": self._error,
                                         "frames_decoded": status.frames_decoded,
                                         "frames_analysed": status.frames_analysed,
                                         "frames_dropped": status.frames_dropped,
                                         "tracks_total": status.tracks_total,
                                         "tracks_identified": status.tracks_identified})
        try:
            self.engine._stream_record_end(self)
        except FacelensError:
            log.exception("stream %s: its end could not be recorded", self.name)
        with self._events_cond:
            self._state = reason
            self._events_cond.notify_all()
        if self._events_file is not None:
            self._events_file.close()
            self._events_file = None

    def _analyse(self, item: _Offered, tracker: FaceTracker, tracks: dict[int, _LiveTrack],
                 last_thumb: npt.NDArray[np.float32] | None,
                 last_detect_s: float) -> tuple[npt.NDArray[np.float32] | None, float]:
        o = self.options
        frame = item.frame
        t = frame.time_s
        thumb = frame.thumbnail() if o.still_threshold > 0 else None
        if (thumb is not None and last_thumb is not None and t - last_detect_s < o.max_still_s
                and float(np.mean(np.abs(thumb - last_thumb))) < o.still_threshold):
            tracker.hold(t)
            with self._lock:
                self._still += 1
            self._analysed_one(item)
            return last_thumb, last_detect_s
        faces = list(self.engine.detect(frame.rgb(), quality_filter=QualityFilter.NONE, pad_retry=False))
        boxes = np.array([f.bbox.as_list() for f in faces], dtype=np.float64).reshape(-1, 4)
        a = tracker.update(boxes, [f.score for f in faces], t)
        for born in a.born:
            tracks[born] = _LiveTrack(t, item.arrived_wall)
        self._end_tracks(list(a.ended), tracks, item)
        track_ids = self._check_identity(item, faces, a, tracker, tracks)
        looks: list[tuple[_LiveTrack, int, Face, float]] = []
        for face, tid in zip(faces, track_ids, strict=True):
            if tid is None:
                continue
            tr = tracks[tid]
            tr.hits += 1
            tr.seen_s = t
            rank = face_rank(face)
            if tr.best is None or rank > tr.best[0]:
                tr.best = (rank, face, frame.rgb())
            if not tr.announced and tr.hits >= o.min_detections:
                tr.announced = True
                with self._lock:
                    self._tracks_total += 1
                self._emit("track_started", item=item, track_id=tid,
                           data={"bbox": [round(v, 1) for v in face.bbox.as_list()], "score": round(face.score, 3)})
            if self._wants_look(tr, face, rank, t):
                looks.append((tr, tid, face, rank))
        if looks:
            embedded = self.engine.embed_faces(frame.rgb(), [f for _, _, f, _ in looks])
            for (tr, tid, _, rank), face in zip(looks, embedded, strict=True):
                assert face.embedding is not None
                tr.looks += 1
                tr.look_rank = max(tr.look_rank, rank)
                tr.last_look_s = tr.checked_s = t
                tr.vectors.append(face.embedding)
                if self.mode is SearchMode.IDENTIFY:
                    self._identify(tr, tid, face, frame.rgb(), item)
                elif tr.looks >= o.embeddings_per_track:
                    self._investigate(tr, tid, item)
        with self._lock:
            self._tracks_open = len(tracks)
        self._analysed_one(item)
        return thumb, t

    def _check_identity(self, item: _Offered, faces: list[Face], a: Assignment, tracker: FaceTracker,
                        tracks: dict[int, _LiveTrack]) -> tuple[int | None, ...]:
        """Whether each looked-at track still shows the same person: one missed and matched again (as in
        stored video, :meth:`facelens.video.pipeline._Run._check_returned`), and every track at least
        every ``_RECHECK_S`` (the analysis may skip, by dropping frames, the moment the place was empty).
        The face is embedded and compared with the track's looks; under the same-person threshold it is
        someone else who took the place: the track ends where it was last seen and a new one starts."""
        ids = list(a.track_ids)
        t = item.frame.time_s
        returned = dict(a.returned)
        due = [(tid, returned.get(tid)) for tid in ids if tid is not None and tid in tracks and tracks[tid].vectors
               and (tid in returned or t - tracks[tid].checked_s >= _RECHECK_S)]
        for tid, was_last_s in due:
            tr = tracks[tid]
            tr.checked_s = t
            i = ids.index(tid)
            face = self.engine.embed_faces(item.frame.rgb(), [faces[i]])[0]
            assert face.embedding is not None
            if self._same is None:
                self._same = same_person_score(self.engine)
            if max(float(np.dot(face.embedding, v)) for v in tr.vectors) >= self._same:
                continue
            ended, new_id = tracker.split(tid, tr.seen_s if was_last_s is None else was_last_s)
            self._end_tracks([ended], tracks, None)
            tracks[new_id] = _LiveTrack(item.frame.time_s, item.arrived_wall)
            ids[i] = new_id
        return tuple(ids)

    def _analysed_one(self, item: _Offered) -> None:
        with self._lock:
            self._analysed += 1
            done = time.monotonic()
            self._out_times.append(done)
            self._frame_latency.append((done - item.arrived_mono) * 1000)

    def _wants_look(self, tr: _LiveTrack, face: Face, rank: float, t: float) -> bool:
        o = self.options
        if tr.identified or tr.searched or tr.looks >= o.embeddings_per_track:
            return False
        if tr.pending is not None and not tr.pending.done():
            return False
        if tr.hits < o.min_detections:
            return False
        if refusal_reasons(face.score, face.pose, face.quality, o.quality_filter):
            return False
        if tr.looks == 0:
            return True
        return t - tr.last_look_s >= _EMBED_SPACING_S and rank > tr.look_rank * _RANK_GAIN

    def _search_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.search.items() if v is not None}

    def _identify(self, tr: _LiveTrack, tid: int, face: Face, rgb: npt.NDArray[np.uint8], item: _Offered) -> None:
        """One look of a track, searched on the search thread (detection goes on meanwhile; a track has
        one search in flight at most)."""
        tr.pending = self._searcher.submit(self._identify_now, tr, tid, face, rgb, item)

    def _identify_now(self, tr: _LiveTrack, tid: int, face: Face, rgb: npt.NDArray[np.uint8],
                      item: _Offered) -> None:
        """One look of a track: its embedding searched at the track's rate divided by its looks. A search
        that cannot be made or recorded ends the stream (failed): nothing unrecorded is reported."""
        try:
            self._identify_look(tr, tid, face, rgb, item)
        except Exception as e:
            log.exception("stream %s: a search failed", self.name)
            self._ended_reason, self._error = "failed", f"a search failed: {e}"
            self._stop.set()
            self._slot.close()

    def _identify_look(self, tr: _LiveTrack, tid: int, face: Face, rgb: npt.NDArray[np.uint8],
                       item: _Offered) -> None:
        assert face.embedding is not None
        result, entry = self.engine._stream_search(self, tid, face.embedding[None, :], face, rgb, item.frame.time_s,
                                                   looks_per_track=self.options.embeddings_per_track)
        if result.matches:
            tr.identified = True
            tr.matches = [m.to_dict() for m in result.matches]
            latency = (time.monotonic() - item.arrived_mono) * 1000
            with self._lock:
                self._tracks_identified += 1
                self._match_latency.append(latency)
            self._emit("track_identified", item=item, track_id=tid, latency_ms=latency,
                       data={"bbox": [round(v, 1) for v in face.bbox.as_list()],
                             **self._result_data(result, entry, tr.looks)})

    def _investigate(self, tr: _LiveTrack, tid: int, item: _Offered | None) -> None:
        """A track's looks searched together for leads (review items where the collection's policy
        asks for review), once per track: when it has its looks, or when it ends."""
        if tr.searched or not tr.vectors:
            return
        tr.searched = True
        assert tr.best is not None
        _, face, rgb = tr.best
        t = item.frame.time_s if item is not None else tr.start_s
        result, entry = self.engine._stream_search(self, tid, np.stack(tr.vectors), face, rgb, t, looks_per_track=1)
        tr.best = (tr.best[0], face, rgb)
        if result.candidates:
            latency = None if item is None else (time.monotonic() - item.arrived_mono) * 1000
            with self._lock:
                self._tracks_identified += 1
                if latency is not None:
                    self._match_latency.append(latency)
            tr.matches = [c.to_dict() for c in result.candidates]
            self._emit("track_candidates", item=item, track_id=tid, latency_ms=latency,
                       data=self._result_data(result, entry, len(tr.vectors)))

    def _result_data(self, result: SearchResult, entry: dict[str, Any] | None, looks: int) -> dict[str, Any]:
        d = result.to_dict()
        keep = ("mode", "matches", "candidates", "max_candidates", "lead_floor_fmr", "notice", "collection_size",
                "policy_floor", "search_id")
        out = {k: d[k] for k in keep if k in d}
        out["operating_point"] = result.operating_point.to_dict()
        out["looks"] = looks
        out["log_entry"] = entry
        return out

    def _end_tracks(self, ended: list[TrackState], tracks: dict[int, _LiveTrack], item: _Offered | None) -> None:
        for st in ended:
            tr = tracks.pop(st.track_id, None)
            if tr is None:
                continue
            if tr.pending is not None:  # its last look's outcome comes before its end
                concurrent.futures.wait([tr.pending], timeout=60)
                tr.pending = None
            if self.mode is SearchMode.INVESTIGATE and tr.announced:
                self._investigate(tr, st.track_id, None)
            if tr.announced:
                self._emit("track_ended", track_id=st.track_id, stream_time_s=st.last_s,
                           data={"start_s": round(tr.start_s, 3), "end_s": round(st.last_s, 3),
                                 "detections": tr.hits, "looks": tr.looks,
                                 "identified": tr.identified or bool(tr.matches),
                                 "persons": sorted({str(m.get("person_id")) for m in tr.matches
                                                    if m.get("person_id")})})
            tr.best = None
        with self._lock:
            self._tracks_open = len(tracks)

    def _emit(self, kind: str, *, item: _Offered | None = None, track_id: int | None = None,
              stream_time_s: float | None = None, latency_ms: float | None = None,
              data: dict[str, Any] | None = None) -> None:
        with self._events_cond:
            self._seq += 1
            captured = None
            if item is not None:
                captured = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(item.arrived_wall)) + \
                    f".{int((item.arrived_wall % 1) * 1e6):06d}+00:00"
                if stream_time_s is None:
                    stream_time_s = item.frame.time_s
            event = StreamEvent(seq=self._seq, kind=kind, stream=self.name, time=now(), track_id=track_id,
                                stream_time_s=stream_time_s, captured_at=captured, latency_ms=latency_ms,
                                data=data or {})
            self._events.append(event)
            self._events_cond.notify_all()
        if self._events_file is not None:
            try:
                self._events_file.write(json.dumps(event.to_dict()) + "\n")
                self._events_file.flush()
            except OSError:
                log.exception("stream %s: the events file %s cannot be written", self.name, self.events_path)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("stream %s: the event callback failed", self.name)
