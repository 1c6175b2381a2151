"""``facelens video detect|search``: who appears in a video file, and when; ``facelens stream ...``: live
streams, in the foreground or in ``facelens serve`` (docs/video.md).

Thin over :meth:`facelens.Engine.detect_video` and :meth:`facelens.Engine.search_video`; ``--annotate``
writes a copy of the video with each track's box and name (:func:`facelens.video.write_annotated_video`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._common import (
    _call,
    _collect,
    _engine_options,
    _home_option,
    _rate,
    _State,
    _threshold_options,
)
from .collection import _mode_options

if TYPE_CHECKING:
    from ..engine import Engine
    from ..video import Track, VideoResult


@click.group()
def video() -> None:
    """Faces in video files: tracks with start and end times, searched in a collection."""


def _video_options(f: Any) -> Any:
    """--every, --annotate and --json: what every video command takes."""
    f = click.option("--json", "as_json", is_flag=True, help="Print one JSON document (keys in docs/video.md).")(f)
    f = click.option("--annotate", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Also write a copy of the video with each track's box and name (an .mp4) here.")(f)
    return click.option("--every", type=click.IntRange(min=1), default=5, show_default=True,
                        help="Examine every Nth frame (1: all; tracks' start and end are exact to a frame "
                             "either way).")(f)


def _track_line(t: Track, searched: bool) -> str:
    head = f"track {t.track_id}  {t.start_s:8.2f} - {t.end_s:8.2f} s  ({t.detections} detections"
    if not searched:
        return (f"{head}; best face at {t.best_time_s:.2f} s, {t.best_face.quality.face_size:.0f} px, "
                f"box {[round(v) for v in t.best_face.bbox.as_list()]})")
    s = t.search
    if t.embeddings is None:
        return f"{head}; no face of it passed the quality filter: not searched)"
    head += f", {len(t.embeddings)} faces searched)"
    if s is None:
        return head
    if s.candidates:
        leads = "; ".join(f"lead {c.rank} {c.person_id or c.external_image_id or c.face_id} score {c.score:.3f} "
                          f"expected strangers {c.expected_strangers:.2g}" for c in s.candidates)
        return f"{head}  {leads}"
    if s.matches:
        m = s.matches[0]
        return (f"{head}  {m.person_id or '-'}  {m.external_image_id or '-'}  face {m.face_id}  score {m.score:.3f}  "
                f"false-match rate {_rate(m.fmr, m.fmr_extrapolated)}")
    return f"{head}  nobody in the collection"


def _finish(state: _State, engine: Engine, result: VideoResult, source: str, annotate: Path | None,
            as_json: bool, header: str) -> None:
    if annotate is not None:
        from ..video import write_annotated_video

        _call(write_annotated_video, result, source, annotate, max_pixels=engine.config.max_pixels)
    if as_json:
        doc = result.to_dict()
        if annotate is not None:
            doc["annotated"] = str(annotate)
        click.echo(json.dumps(doc, indent=2))
        return
    s = result.stats
    state.say(f"{source}: {result.info.width}x{result.info.height}, {s.video_s:.2f} s of video in {s.elapsed_s:.2f} s "
              f"({s.speed:.1f}x real time); {len(result.tracks)} track{'s' if len(result.tracks) != 1 else ''}"
              + (f"; {header}" if header else ""))
    for t in result.tracks:
        state.say(_track_line(t, result.collection is not None))
    if annotate is not None:
        state.say(f"annotated copy: {annotate}")


@video.command("detect")
@click.argument("video_file")
@_video_options
@_engine_options
@click.pass_obj
def video_detect(state: _State, /, video_file: str, every: int, annotate: Path | None, as_json: bool,
                 **engine_kw: Any) -> None:
    """The faces of VIDEO_FILE followed as tracks, each with its start and end time (no collection)."""
    engine = state.engine(**_collect(**engine_kw))
    result = _call(engine.detect_video, video_file, every=every)
    _finish(state, engine, result, video_file, annotate, as_json, "")


@video.command("search")
@click.argument("collection_name")
@click.argument("video_file")
@_mode_options
@click.option("--max-results", type=click.IntRange(min=1), default=None, help="identify: at most this many matches "
              "per track (default 10).")
@_threshold_options
@_video_options
@click.option("--purpose", default=None, help="Why this search is made (recorded in the signed log with who ran it).")
@_home_option
@click.option("--threads", type=click.IntRange(0, 1024), default=None,
              help="onnxruntime threads per model (0: one per core).")
@click.pass_obj
def video_search(state: _State, /, collection_name: str, video_file: str, mode: str, max_candidates: int | None,
                 max_results: int | None, max_fmr: float | None, max_fpir: float | None, min_score: float | None,
                 every: int, annotate: Path | None, as_json: bool, purpose: str | None, home: Path | None,
                 threads: int | None) -> None:
    """Who of collection COLLECTION_NAME appears in VIDEO_FILE, and when: each track with start_s, end_s and
    its matches (or, with --mode investigate, ranked leads for a person to review). The search is recorded
    in the home's signed log as made by the local user ($FACELENS_ACTOR, else the login name)."""
    from ..accountability import Actor

    engine = state.engine(**_collect(home=str(home) if home else None, threads=threads))
    result = _call(engine.search_video, collection_name, video_file, mode=mode, max_candidates=max_candidates,
                   max_results=max_results, max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score, every=every,
                   actor=Actor.cli(), purpose=purpose)
    header = f"searched {collection_name!r} in {mode} mode"
    if mode == "identify" and max_fmr is None and min_score is None:
        fpir = engine.config.max_fpir if max_fpir is None else max_fpir
        header += f" at max FPIR {fpir:g} per track (each of a track's n faces searched at {fpir:g} / n)"
    _finish(state, engine, result, video_file, annotate, as_json, header)


# -- live streams: `facelens stream ...` ------------------------------------------------------------
# A top-level group rather than `facelens video stream`: the issue and Rekognition name stream processors as
# their own resource (start, list, status, stop, events), and each command here either runs one stream in
# the foreground (no --server) or is one request to `facelens serve` (with --server).

_SERVER_HELP = ("The facelens service to talk to (e.g. http://127.0.0.1:8000; default $FACELENS_SERVER). Without "
                "it, `start` runs the stream here, in the foreground.")


def _server_options(f: Any) -> Any:
    f = click.option("--key", envvar="FACELENS_API_KEY", default=None,
                     help="The API key (default $FACELENS_API_KEY).")(f)
    return click.option("--server", envvar="FACELENS_SERVER", default=None, help=_SERVER_HELP)(f)


def _http(method: str, server: str, path: str, key: str | None, body: dict[str, Any] | None = None,
          accept: str = "application/json", timeout_s: float = 60.0) -> Any:
    """One request to the service; an error answer becomes the CLI's error line and exit code."""
    import urllib.error
    import urllib.request

    from ._common import EXIT_INPUT, EXIT_REFUSED, EXIT_USAGE

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.rstrip("/") + path, data=data, method=method,
                                 headers={"Accept": accept, "Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        return urllib.request.urlopen(req, timeout=timeout_s)  # noqa: S310 (the user's own server URL)
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read() or b"{}").get("error", {})
        except ValueError:
            err = {}
        click.echo(f"facelens: error: HTTP {e.code} {err.get('code', '')}: {err.get('message', e.reason)}", err=True)
        raise SystemExit(EXIT_REFUSED if e.code in (401, 403) else EXIT_INPUT if e.code < 500 else EXIT_USAGE) from None
    except (urllib.error.URLError, OSError) as e:
        click.echo(f"facelens: error: cannot reach the service at {server}: {getattr(e, 'reason', e)}", err=True)
        raise SystemExit(EXIT_USAGE) from None


def _need_server(server: str | None) -> str:
    if not server:
        raise click.UsageError("give --server (or $FACELENS_SERVER): the facelens service that runs the streams")
    return server


@click.group()
def stream() -> None:
    """Live streams (RTSP, HTTP MPEG-TS/MJPEG, UDP, a camera): faces followed and searched as they appear,
    one JSON event per line (docs/video.md, "Live streams")."""


@stream.command("start")
@click.argument("name")
@click.option("--collection", "collection_name", required=True, help="The collection to search.")
@click.option("--source", required=True, help="rtsp://, http(s)://, udp:// URL, a camera device (/dev/video0) or, "
              "in the foreground only, a video file (read at its own pace).")
@_mode_options
@click.option("--max-results", type=click.IntRange(min=1), default=None, help="identify: at most this many matches.")
@_threshold_options
@click.option("--every", type=click.IntRange(min=1), default=None, help="Analyse every Nth frame (default 2).")
@click.option("--purpose", default=None, help="Why the stream is watched (recorded in the signed log).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Foreground: stop after this many seconds (default: until the source ends or Ctrl-C).")
@click.option("--events-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Foreground: also append every event to this file (JSON lines).")
@_server_options
@_home_option
@click.option("--threads", type=click.IntRange(0, 1024), default=None, help="onnxruntime threads per model.")
@click.pass_obj
def stream_start(state: _State, /, name: str, collection_name: str, source: str, mode: str,
                 max_candidates: int | None, max_results: int | None, max_fmr: float | None, max_fpir: float | None,
                 min_score: float | None, every: int | None, purpose: str | None, duration: float | None,
                 events_file: Path | None, server: str | None, key: str | None, home: Path | None,
                 threads: int | None) -> None:
    """Start stream NAME: follow SOURCE and search its faces in --collection. With --server, the service
    runs it (and keeps it running after this command returns): prints its status. Without, it runs here
    until the source ends, --duration passes or Ctrl-C, printing each event as a JSON line (track_started,
    track_identified, track_candidates, track_ended, source_lost, source_back, stream_ended)."""
    search = {"mode": mode, "max_candidates": max_candidates, "max_results": max_results, "max_fmr": max_fmr,
              "max_fpir": max_fpir, "min_score": min_score, "every": every}
    if server:
        given = {k: v for k, v in search.items() if v is not None}
        body = {"source": source, "name": name, "purpose": purpose, **given}
        with _http("POST", server, f"/v1/collections/{collection_name}/streams", key, body) as resp:
            click.echo(json.dumps(json.loads(resp.read()), indent=2))
        return
    import signal
    import threading

    from ..accountability import Actor
    from ..video.stream import StreamEvent

    def show(event: StreamEvent) -> None:
        click.echo(json.dumps(event.to_dict()))

    engine = state.engine(**_collect(home=str(home) if home else None, threads=threads))
    processor = _call(engine.watch_stream, collection_name, source, name=name, on_event=show, events_path=events_file,
                      actor=Actor.cli(), purpose=purpose, **search)
    interrupted = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        interrupted.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = None if duration is None else time.monotonic() + duration
        while not processor.done and not interrupted.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            interrupted.wait(0.2)
    finally:
        status = processor.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if status.error:
        from ._common import EXIT_INPUT

        click.echo(f"facelens: error: stream {name}: {status.error}", err=True)
        raise SystemExit(EXIT_INPUT)


def _echo_answer(method: str, server: str | None, path: str, key: str | None) -> None:
    """Send one request to the service and print its JSON answer, indented."""
    with _http(method, _need_server(server), path, key) as resp:
        click.echo(json.dumps(json.loads(resp.read()), indent=2))


@stream.command("list")
@click.option("--collection", "collection_name", required=True)
@_server_options
def stream_list(collection_name: str, server: str | None, key: str | None) -> None:
    """The streams of a collection in the service (JSON)."""
    _echo_answer("GET", server, f"/v1/collections/{collection_name}/streams", key)


@stream.command("status")
@click.argument("name")
@click.option("--collection", "collection_name", required=True)
@_server_options
def stream_status(name: str, collection_name: str, server: str | None, key: str | None) -> None:
    """Stream NAME's status (JSON): state, frames decoded, analysed and dropped, fps, latencies, tracks."""
    _echo_answer("GET", server, f"/v1/collections/{collection_name}/streams/{name}", key)


@stream.command("stop")
@click.argument("name")
@click.option("--collection", "collection_name", required=True)
@_server_options
def stream_stop(name: str, collection_name: str, server: str | None, key: str | None) -> None:
    """Stop stream NAME in the service; prints its final status (JSON)."""
    _echo_answer("DELETE", server, f"/v1/collections/{collection_name}/streams/{name}", key)


@stream.command("events")
@click.argument("name")
@click.option("--collection", "collection_name", required=True)
@click.option("--after", type=click.IntRange(min=0), default=0, help="Only events after this seq.")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Keep printing events as they come (Server-Sent Events) until the stream ends or Ctrl-C.")
@_server_options
def stream_events(name: str, collection_name: str, after: int, follow: bool, server: str | None,
                  key: str | None) -> None:
    """Stream NAME's events, one JSON line each."""
    path = f"/v1/collections/{collection_name}/streams/{name}/events?after={after}"
    if not follow:
        with _http("GET", _need_server(server), path, key) as resp:
            for event in json.loads(resp.read())["events"]:
                click.echo(json.dumps(event))
        return
    with _http("GET", _need_server(server), path, key, accept="text/event-stream", timeout_s=3600) as resp:
        try:
            for raw in resp:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("data:"):
                    click.echo(line.removeprefix("data:").strip())
        except KeyboardInterrupt:
            return
