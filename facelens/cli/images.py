"""``facelens detect``, ``compare``, ``demo`` and ``models``: single images, no collection."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import FacelensError, ImageDecodeError, InvalidArgumentError
from ._common import (
    _QUALITY_CHOICES,
    EXIT_NO_MATCH,
    EXIT_OK,
    EXIT_USAGE,
    _collect,
    _engine_options,
    _exit_code,
    _fail,
    _home_option,
    _operating_point_words,
    _rate,
    _State,
)

if TYPE_CHECKING:
    from ..types import Comparison, Face

__all__ = ["compare", "demo", "detect", "models"]


def _progress(items: list[str], label: str, state: _State) -> Any:
    show = sys.stderr.isatty() and not state.quiet and len(items) > 3
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="img", file=sys.stderr)


def _face_line(i: int, f: Face) -> str:
    b = f.bbox
    status = "ok" if f.acceptable else "refused: " + ", ".join(r.value for r in f.refusal_reasons)
    return (f"  #{i}  box {b.left:.0f},{b.top:.0f}-{b.right:.0f},{b.bottom:.0f} ({b.width:.0f}x{b.height:.0f} px)"
            f"  score {f.score:.2f}  yaw {f.pose.yaw:+.0f} pitch {f.pose.pitch:+.0f} roll {f.pose.roll:+.0f}"
            f"  sharpness {f.quality.sharpness:.0f} brightness {f.quality.brightness:.0f}  [{status}]")


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Keep only the N largest faces per image.")
@click.option("--quality-filter", type=_QUALITY_CHOICES, default=None,
              help="Which faces are marked refused for indexing (default AUTO).")
@click.option("--embeddings", is_flag=True, help="Also compute embeddings (included in --json output).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (keys in docs/cli.md).")
@_engine_options
@click.pass_obj
def detect(state: _State, /, images: tuple[str, ...], max_faces: int | None, quality_filter: str | None,
           embeddings: bool, as_json: bool, **engine_kw: Any) -> None:
    """Find the faces in each IMAGE: box, landmarks, pose, quality, refusal reasons."""
    engine = state.engine(**_collect(**engine_kw))
    results: list[dict[str, Any]] = []
    worst = EXIT_OK
    for path in _progress(list(images), "detect", state):
        try:
            call = engine.analyze if embeddings else engine.detect
            faces = call(path, max_faces=max_faces, quality_filter=quality_filter)
        except (ImageDecodeError, InvalidArgumentError) as exc:
            worst = max(worst, _exit_code(exc))
            click.echo(f"facelens: error: {exc}", err=True)
            results.append({"image": path, "error": {"type": type(exc).__name__, "message": str(exc)}})
            continue
        results.append({"image": path, "faces": [f.to_dict(include_embedding=embeddings) for f in faces]})
        if not as_json:
            state.say(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
            for i, f in enumerate(faces, 1):
                state.say(_face_line(i, f))
    if as_json:
        click.echo(json.dumps({"model": engine.model_name, "images": results}, indent=2))
    sys.exit(worst)


def _rate_words(fmr: float) -> str:
    return f"1 in {1 / fmr:,.0f}" if fmr > 0 else "none"


@click.command()
@click.argument("image_a")
@click.argument("image_b")
@click.option("--max-fmr", type=float, default=None,
              help="Declare a match when the false-match rate is at most this (default 1e-5).")
@click.option("--purpose", default=None, metavar="TEXT", help="Why this compare is run (a case reference); "
              "recorded with it in the home's signed log.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (keys in docs/cli.md).")
@_home_option
@_engine_options
@click.pass_obj
def compare(state: _State, /, image_a: str, image_b: str, max_fmr: float | None, purpose: str | None, as_json: bool,
            home: Path | None, **engine_kw: Any) -> None:
    """Compare the largest face of IMAGE_A with the largest face of IMAGE_B.

    Exit code 0 when they match at --max-fmr, 1 when they do not. Recorded in the home's signed log (the
    images' sha256, never the images), with the local user as the actor.
    """
    engine = state.engine(**_collect(home=str(home) if home else None, **engine_kw))
    try:
        from ..accountability.actor import Actor

        result = engine.compare(image_a, image_b, max_fmr=max_fmr, actor=Actor.cli(), purpose=purpose)
    except FacelensError as exc:
        _fail(exc)
    if as_json:
        d = result.to_dict()
        d.update(image_a=image_a, image_b=image_b, model=engine.model_name)
        click.echo(json.dumps(d, indent=2))
    else:
        _print_comparison(state, result)
    sys.exit(EXIT_OK if result.match else EXIT_NO_MATCH)


def _print_comparison(state: _State, r: Comparison) -> None:
    about = "about " if r.fmr_extrapolated else ""
    state.say(f"score {r.score:.4f}: {about}{_rate_words(r.fmr)} pairs of different people score this high "
              f"(false-match rate {_rate(r.fmr, r.fmr_extrapolated)}, calibration {r.calibration})")
    verdict = "MATCH" if r.match else "NO MATCH"
    state.say(f"{verdict} at {_operating_point_words(r.operating_point)}")


@click.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--max-fmr", type=float, default=None, help="Decision point (default 1e-5).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_engine_options
@click.pass_obj
def demo(state: _State, /, folder: Path | None, max_fmr: float | None, as_json: bool, **engine_kw: Any) -> None:
    """Compare and search the portraits in FOLDER (default: examples/portraits).

    Files named ID_x.jpg belong to person ID. First every pair is compared (same-person pairs should
    match, others not); then each person's first photo is indexed into a collection (in a temporary
    folder) and the collection is searched with every other photo. Prints each decision with its
    false-match rate and a tally.
    """
    from ..demo import run_demo

    folder = folder if folder is not None else Path("examples/portraits")
    if not folder.is_dir():
        click.echo(f"facelens: error: {folder}: no such folder (give the portraits folder as an argument)", err=True)
        sys.exit(EXIT_USAGE)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="facelens-demo-") as home:
        engine = state.engine(**_collect(home=home, **engine_kw))
        try:
            report = run_demo(engine, folder, max_fmr=max_fmr, say=None if as_json else state.say)
        except FacelensError as exc:
            _fail(exc)
        finally:
            engine.close()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    sys.exit(EXIT_OK)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def models(state: _State, as_json: bool) -> None:
    """List the packaged model files, their sha256, licences and whether they are installed."""
    from ..errors import ModelFileError
    from ..models.files import KNOWN_FILES, locate, sha256_of

    rows = []
    for f in KNOWN_FILES.values():
        try:
            path = locate(f)
            status = "ok" if sha256_of(path) == f.sha256 else "SHA256 MISMATCH"
            where = str(path)
        except ModelFileError:
            status, where = "not installed", f"{f.package}/{f.relpath}"
        rows.append({"key": f.key, "package": f.package, "path": where, "sha256": f.sha256,
                     "status": status, "licence": f.licence})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state.say(f"{r['key']}: {r['status']}\n  {r['path']}\n  sha256 {r['sha256']}\n  licence: {r['licence']}")

