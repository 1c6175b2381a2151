"""The ``facelens`` command: each command is one call into :class:`facelens.Engine` plus formatting.

Exit codes (stable, documented in docs/cli.md):
  0  success (``compare``: the faces match)
  1  ``compare`` only: the faces do not match at the requested false-match rate
  2  usage error (bad option or argument)
  3  input error: an image could not be read, or an image needed a face and had none
  4  model or calibration error (missing/corrupt model file, no calibration)
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from . import __version__
from .errors import (
    CalibrationError,
    FacelensError,
    ImageDecodeError,
    InvalidArgumentError,
    ModelError,
    NoFaceError,
)
from .types import QualityFilter

if TYPE_CHECKING:
    from .engine import Engine
    from .types import Comparison, Face

EXIT_OK, EXIT_NO_MATCH, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL = 0, 1, 2, 3, 4

_QUALITY_CHOICES = click.Choice([q.value for q in QualityFilter], case_sensitive=False)


def _exit_code(exc: FacelensError) -> int:
    if isinstance(exc, (ImageDecodeError, NoFaceError)):
        return EXIT_INPUT
    if isinstance(exc, (ModelError, CalibrationError)):
        return EXIT_MODEL
    if isinstance(exc, InvalidArgumentError):
        return EXIT_USAGE
    return EXIT_INPUT


def _fail(exc: FacelensError) -> NoReturn:
    click.echo(f"facelens: error: {exc}", err=True)
    sys.exit(_exit_code(exc))


class _State:
    def __init__(self, verbose: int, quiet: bool, engine_options: dict[str, Any]) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.engine_options = engine_options

    def engine(self, **extra: Any) -> Engine:
        from .engine import Engine

        try:
            return Engine(**{**self.engine_options, **extra})
        except FacelensError as exc:
            _fail(exc)

    def say(self, text: str = "") -> None:
        if not self.quiet:
            click.echo(text)


def _engine_options(f: Any) -> Any:
    options = [
        click.option("--model", default=None,
                     help="buffalo_s (default), dlib, or a model folder with facelens-model.json."),
        click.option("--threads", type=click.IntRange(min=0), default=None,
                     help="onnxruntime threads per model (0: one per core)."),
        click.option("--det-size", type=int, default=None,
                     help="Detector letterbox side in pixels (multiple of 32, default 640)."),
        click.option("--det-threshold", type=click.FloatRange(0, 1), default=None,
                     help="Minimum detector score for a face (default 0.5)."),
        click.option("--min-face-size", type=click.FloatRange(min=0), default=None,
                     help="Ignore faces whose shorter box side is below this many pixels."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=None,
                     help="Refuse images with more pixels than this (default 40,000,000)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _collect(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facelens")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors; the exit code tells the result.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """facelens: detect and compare faces, with measured error rates.

    Every comparison reports the false-match rate its score stands for: how often two different
    people score that high. Run `facelens COMMAND --help` for each command.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = _State(verbose, quiet, {})


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


@main.command()
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


@main.command()
@click.argument("image_a")
@click.argument("image_b")
@click.option("--max-fmr", type=float, default=None,
              help="Declare a match when the false-match rate is at most this (default 1e-5).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (keys in docs/cli.md).")
@_engine_options
@click.pass_obj
def compare(state: _State, /, image_a: str, image_b: str, max_fmr: float | None, as_json: bool,
            **engine_kw: Any) -> None:
    """Compare the largest face of IMAGE_A with the largest face of IMAGE_B.

    Exit code 0 when they match at --max-fmr, 1 when they do not.
    """
    engine = state.engine(**_collect(**engine_kw))
    try:
        result = engine.compare(image_a, image_b, max_fmr=max_fmr)
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
    bound = "fewer than " if r.fmr_is_upper_bound else ""
    state.say(f"score {r.score:.4f}: {bound}{_rate_words(r.fmr)} pairs of different people score this high "
              f"(false-match rate {'< ' if r.fmr_is_upper_bound else ''}{r.fmr:.2g}, calibration {r.calibration})")
    verdict = "MATCH" if r.match else "NO MATCH"
    state.say(f"{verdict} at max false-match rate {r.max_fmr:g} ({_rate_words(r.max_fmr)}; score threshold "
              f"{r.threshold:.4f})")


@main.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--max-fmr", type=float, default=None, help="Decision point (default 1e-5).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_engine_options
@click.pass_obj
def demo(state: _State, /, folder: Path | None, max_fmr: float | None, as_json: bool, **engine_kw: Any) -> None:
    """Compare every pair of portraits in FOLDER (default: examples/portraits).

    Files named ID_x.jpg belong to person ID; each same-person pair should match and each pair of
    different people should not. Prints every decision with its false-match rate and a tally.
    """
    from .demo import run_demo

    folder = folder if folder is not None else Path("examples/portraits")
    if not folder.is_dir():
        click.echo(f"facelens: error: {folder}: no such folder (give the portraits folder as an argument)", err=True)
        sys.exit(EXIT_USAGE)
    engine = state.engine(**_collect(**engine_kw))
    try:
        report = run_demo(engine, folder, max_fmr=max_fmr, say=None if as_json else state.say)
    except FacelensError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    sys.exit(EXIT_OK)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def models(state: _State, as_json: bool) -> None:
    """List the packaged model files, their sha256, licences and whether they are installed."""
    from .errors import ModelFileError
    from .models.files import KNOWN_FILES, locate, sha256_of

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


def run() -> None:
    """Console-script entry point: usage errors exit 2, library errors get one line, no traceback."""
    try:
        main(standalone_mode=True)
    except FacelensError as exc:  # pragma: no cover - commands catch their own
        _fail(exc)


if __name__ == "__main__":
    run()
