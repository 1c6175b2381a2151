"""``facelens video detect|search``: who appears in a video file, and when (docs/video.md).

Thin over :meth:`facelens.Engine.detect_video` and :meth:`facelens.Engine.search_video`; ``--annotate``
writes a copy of the video with each track's box and name (:func:`facelens.video.write_annotated_video`).
"""

from __future__ import annotations

import json
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
