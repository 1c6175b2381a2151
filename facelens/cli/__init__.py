"""The ``facelens`` command: each command is one call into :class:`facelens.Engine` plus formatting.

Exit codes (stable, documented in docs/cli.md):
  0  success (``compare``: the faces match)
  1  ``compare`` only: the faces do not match at the requested false-match rate
  2  usage error (bad option or argument, a number out of range)
  3  input error: an image could not be read, or an image needed a face and had none; an unknown
     collection, face or person; a folder facelens cannot use
  4  model or calibration error (missing/corrupt model file, no calibration)

``_EXIT_CODES`` below is the one table from errors to these codes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .. import __version__
from ..errors import (
    CalibrationError,
    CollectionError,
    FacelensError,
    ImageDecodeError,
    InvalidArgumentError,
    ModelError,
    NoFaceError,
)
from ..server.errors import InsecureSettingsError, SearchLogError
from ..types import LEAD_NOTICE, QualityFilter, SearchMode

if TYPE_CHECKING:
    from ..engine import Engine
    from ..types import Comparison, Face, OperatingPoint, SearchResult

EXIT_OK, EXIT_NO_MATCH, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL = 0, 1, 2, 3, 4

_log = logging.getLogger(__name__)

_QUALITY_CHOICES = click.Choice([q.value for q in QualityFilter], case_sensitive=False)


class _FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and infinity (click's range checks let nan through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


# The one table from errors to exit codes (docs/cli.md), most specific first: the first class an error is
# an instance of decides. The service's own errors are settings or usage problems (no API key, auth off
# on a public address, a file that is not a search log).
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (InvalidArgumentError, EXIT_USAGE),
    (InsecureSettingsError, EXIT_USAGE),
    (SearchLogError, EXIT_USAGE),
    (ModelError, EXIT_MODEL),
    (CalibrationError, EXIT_MODEL),
    (ImageDecodeError, EXIT_INPUT),
    (NoFaceError, EXIT_INPUT),
    (CollectionError, EXIT_INPUT),
    (FacelensError, EXIT_INPUT),
    (OverflowError, EXIT_USAGE),  # a number too large for SQLite or onnxruntime
    (UnicodeError, EXIT_INPUT),  # text that is not valid UTF-8 (a file name's raw bytes)
    (OSError, EXIT_INPUT),  # the filesystem refused (a --home that is a file, a full disk...)
)


def _exit_code(exc: BaseException) -> int:
    """The documented exit code for an error a command did not handle itself."""
    return next(code for cls, code in _EXIT_CODES if isinstance(exc, cls))


def _fail(exc: BaseException) -> NoReturn:
    """One line on stderr, ``facelens: error: <what>``, and the error's exit code; never a traceback."""
    text = str(exc) if not isinstance(exc, OverflowError) else f"a number is out of range ({exc})"
    click.echo(f"facelens: error: {text}", err=True)
    sys.exit(_exit_code(exc))


class _Group(click.Group):
    """The ``facelens`` group: an error no command caught becomes one line and its exit code (table above)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (FacelensError, OverflowError, OSError, UnicodeError) as exc:
            if isinstance(exc, BrokenPipeError):  # `facelens ... | head`: the reader left, nothing to say
                sys.exit(EXIT_OK)
            _log.debug("command failed", exc_info=True)
            _fail(exc)


class _State:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def engine(self, **extra: Any) -> Engine:
        from ..engine import Engine

        try:
            return Engine(**extra)
        except FacelensError as exc:
            _fail(exc)

    def say(self, text: str = "") -> None:
        if not self.quiet:
            click.echo(text)


def _engine_options(f: Any) -> Any:
    options = [
        click.option("--model", default=None,
                     help="buffalo_s (default), dlib, or a model folder with facelens-model.json."),
        click.option("--threads", type=click.IntRange(0, 1024), default=None,
                     help="onnxruntime threads per model (0: one per core)."),
        click.option("--det-size", type=click.IntRange(32, 8192), default=None,
                     help="Detector letterbox side in pixels (multiple of 32, default 640)."),
        click.option("--det-threshold", type=_FiniteFloatRange(0, 1), default=None,
                     help="Minimum detector score for a face (default 0.5)."),
        click.option("--min-face-size", type=_FiniteFloatRange(min=0), default=None,
                     help="Ignore faces whose shorter box side is below this many pixels."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=None,
                     help="Refuse images with more pixels than this (default 40,000,000)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _collect(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
    ctx.obj = _State(quiet)


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


def _rate(fmr: float, extrapolated: bool) -> str:
    return f"{fmr:.1e}{' (extrapolated)' if extrapolated else ''}"


def _operating_point_words(op: OperatingPoint) -> str:
    """"max false-match rate 1e-05 (...; score >= 0.3580, worst group: overall)" and the like."""
    rate = (f"max FPIR {op.max_fpir:g} over {op.collection_size:,} faces = max false-match rate {op.max_fmr:.2g} "
            f"per comparison" if op.max_fpir is not None else f"max false-match rate {op.max_fmr:.2g}")
    return (f"{rate} (score >= {op.threshold:.4f}{', extrapolated' if op.extrapolated else ''}; "
            f"{op.policy} policy, set by {op.limited_by})")


def _print_comparison(state: _State, r: Comparison) -> None:
    about = "about " if r.fmr_extrapolated else ""
    state.say(f"score {r.score:.4f}: {about}{_rate_words(r.fmr)} pairs of different people score this high "
              f"(false-match rate {_rate(r.fmr, r.fmr_extrapolated)}, calibration {r.calibration})")
    verdict = "MATCH" if r.match else "NO MATCH"
    state.say(f"{verdict} at {_operating_point_words(r.operating_point)}")


@main.command()
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


@main.command()
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


# -- collections ------------------------------------------------------------------------------------
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def _home_option(f: Any) -> Any:
    return click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Folder holding the collections (default: $FACELENS_HOME, else the user data folder).")(f)


def _threshold_options(f: Any) -> Any:
    """--max-fpir / --max-fmr / --min-score: how a search decides what is a match (at most one)."""
    f = click.option("--min-score", type=float, default=None, help="Match at this raw cosine score instead; the "
                     "false-match rate it stands for is reported.")(f)
    f = click.option("--max-fmr", type=float, default=None, help="Match when the per-comparison false-match rate "
                     "is at most this (e.g. 1e-6).")(f)
    return click.option("--max-fpir", type=float, default=None, help="Match so that a search for someone NOT in "
                         "the collection returns anyone at most this often (default 0.003), whatever its "
                         "size.")(f)


def _json_and_home(f: Any) -> Any:
    """The --json and --home options every collection command takes."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(_home_option(f))


def _collection_engine(state: _State, home: Path | None, **extra: Any) -> Engine:
    return state.engine(**_collect(home=str(home) if home else None, **extra))


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except FacelensError as exc:
        _fail(exc)


def _emit(state: _State, as_json: bool, doc: Any, text: str) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        state.say(text)


@main.group()
def collection() -> None:
    """Create, list, describe, delete and check collections."""


@collection.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the new collection's description as JSON.")
@_home_option
@click.option("--model", default=None, help="Model the collection is bound to (default buffalo_s).")
@click.option("--calibration", "calibration", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Calibration profile for this collection's searches (from `facelens calibrate`; default: the "
              "model's shipped profile).")
@click.option("--lead-floor", "lead_floor", type=_FiniteFloatRange(min=0, max=1, min_open=True), default=None,
              metavar="FMR", help="Investigations list candidates scoring at least the threshold of this "
              "per-comparison false-match rate (default 1e-3).")
@click.pass_obj
def collection_create(state: _State, /, name: str, as_json: bool, home: Path | None, model: str | None,
                      calibration: str | None, lead_floor: float | None) -> None:
    """Create an empty collection NAME bound to the engine's model."""
    engine = _collection_engine(state, home, model=model)
    info = _call(engine.create_collection, name, calibration=calibration, lead_floor_fmr=lead_floor)
    _emit(state, as_json, info.to_dict(), f"created collection {name!r} (model {info.model_name}) in {engine.home}")


@collection.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of names.")
@_home_option
@click.pass_obj
def collection_list(state: _State, /, as_json: bool, home: Path | None) -> None:
    """List the collections."""
    from ..store import default_home, list_collection_names

    names = list_collection_names(home or default_home())
    _emit(state, as_json, {"collections": names}, "\n".join(names) if names else "no collections")


@collection.command("describe")
@click.argument("name")
@_json_and_home
@click.pass_obj
def collection_describe(state: _State, /, name: str, as_json: bool, home: Path | None) -> None:
    """Face count, person count, model and index of collection NAME."""
    info = _call(_collection_engine(state, home).describe_collection, name)
    d = info.to_dict()
    _emit(state, as_json, d, "\n".join(f"{k}: {v}" for k, v in d.items()))


@collection.command("delete")
@click.argument("name")
@_json_and_home
@click.pass_obj
def collection_delete(state: _State, /, name: str, as_json: bool, home: Path | None) -> None:
    """Delete collection NAME and every face in it."""
    _call(_collection_engine(state, home).delete_collection, name)
    _emit(state, as_json, {"deleted": name}, f"deleted collection {name!r}")


@collection.command("check")
@click.argument("name")
@click.option("--repair", is_flag=True, help="Rebuild the vector index from the metadata if they differ.")
@_json_and_home
@click.pass_obj
def collection_check(state: _State, /, name: str, repair: bool, as_json: bool, home: Path | None) -> None:
    """Check that the vector index holds exactly the faces in the metadata (exit 1 if not, unrepaired)."""
    r = _call(_collection_engine(state, home).check_collection, name, repair=repair)
    d = {"faces": r.faces, "vectors": r.vectors, "missing_from_index": r.missing_from_index,
         "extra_in_index": r.extra_in_index, "rerank_rows_wrong": r.rerank_rows_wrong, "consistent": r.consistent,
         "repaired": r.repaired}
    text = (f"{name}: {r.faces} faces, {r.vectors} vectors; " + ("consistent" if r.consistent else
            f"{r.missing_from_index} missing from the index, {r.extra_in_index} extra, "
            f"{r.rerank_rows_wrong} wrong float16 re-rank rows"
            + (" (repaired)" if r.repaired else " (run with --repair)")))
    _emit(state, as_json, d, text)
    sys.exit(EXIT_OK if r.consistent or r.repaired else EXIT_NO_MATCH)


def _text_id(name: str) -> str:
    """A file name as an external image id: bytes that are not UTF-8 become escapes (b'\\xff' -> '\\xff')."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _expand_images(paths: tuple[str, ...]) -> list[tuple[str, str]]:
    """(file, default external id) for each image: a file's name, or its path inside a given folder.

    Inside a folder only regular files with an image suffix are taken, and symbolic links are skipped,
    files and folders alike: a link can point out of the folder (``photos/x -> /``), loop, or index
    the same photo twice under two ids. The skipped links are named in a warning. A path given on
    the command line is used as given, link or not.
    """
    out: list[tuple[str, str]] = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            out.append((p, _text_id(path.name)))
            continue
        skipped: list[str] = []
        found: list[Path] = []
        for root, dirs, files in os.walk(path):  # does not descend into linked folders
            here = Path(root)
            skipped += [str(here / d) for d in dirs if (here / d).is_symlink()]
            dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink())
            for name in files:
                f = here / name
                if f.is_symlink():
                    skipped.append(str(f))
                elif f.suffix.lower() in _IMAGE_SUFFIXES and stat.S_ISREG(f.lstat().st_mode):
                    found.append(f)
        out += [(str(f), _text_id(f.relative_to(path).as_posix())) for f in sorted(found)]
        if skipped:
            _log.warning("%s: skipped %d symbolic link(s) inside the folder: %s", p, len(skipped),
                         ", ".join(sorted(skipped)[:5]) + (", ..." if len(skipped) > 5 else ""))
    return out


@main.command()
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("--external-id", default=None, help="External image id (one image only; default: the file name, "
              "or the path inside a folder).")
@click.option("--person", "person_id", default=None, help="Person id to give every indexed face.")
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Index at most the N largest faces.")
@click.option("--quality-filter", type=_QUALITY_CHOICES, default=None, help="Refuse faces below this quality "
              "(default AUTO).")
@click.option("--workers", type=click.IntRange(min=1), default=2, help="Images processed in parallel.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_home_option
@click.pass_obj
def index(state: _State, /, name: str, paths: tuple[str, ...], external_id: str | None, person_id: str | None,
          max_faces: int | None, quality_filter: str | None, workers: int, as_json: bool,
          home: Path | None) -> None:
    """Index the faces of each image in PATHS (files or folders, recursively) into collection NAME.

    Re-running skips images already indexed under the same external id, so an interrupted run resumes.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ..imageio import check_image_file

    if person_id is not None:
        from ..engine import _check_person_id

        _check_person_id(person_id)  # one usage error (exit 2), not one error per image
    images = _expand_images(paths)
    if external_id is not None and len(images) != 1:
        click.echo("facelens: error: --external-id needs exactly one image", err=True)
        sys.exit(EXIT_USAGE)
    # Parallelism comes from the workers; one onnxruntime thread each avoids oversubscribing the cores.
    threads = None if os.environ.get("FACELENS_THREADS") else (1 if workers > 1 else 0)
    engine = _collection_engine(state, home, threads=threads)
    _call(engine.describe_collection, name)  # fail early on an unknown collection

    def one(item: tuple[str, str]) -> dict[str, Any]:
        path, default_id = item
        try:
            check_image_file(path)  # before the engine opens it to hash it: a FIFO would block there
            r = engine.index_faces(name, path, external_image_id=external_id or default_id, person_id=person_id,
                                   max_faces=max_faces, quality_filter=quality_filter)
        except (ImageDecodeError, InvalidArgumentError) as exc:
            return {"image": path, "error": {"type": type(exc).__name__, "message": str(exc)}}
        return {"image": path, "external_image_id": external_id or default_id, **r.to_dict()}

    results: list[dict[str, Any]] = []
    show = sys.stderr.isatty() and not state.quiet and len(images) > 3
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(images), desc=f"index {name}",
                                                               unit="img", disable=not show) as bar:
        for res in pool.map(one, images):
            results.append(res)
            bar.update(1)
            if "error" in res:
                click.echo(f"facelens: error: {res['error']['message']}", err=True)
    errors = sum("error" in r for r in results)
    summary = {"images": len(results), "faces_indexed": sum(len(r.get("indexed", ())) for r in results
                                                            if not r.get("already_indexed")),
               "already_indexed": sum(bool(r.get("already_indexed")) for r in results),
               "faces_refused": sum(len(r.get("unindexed", ())) for r in results), "errors": errors}
    if as_json:
        click.echo(json.dumps({"collection": name, "summary": summary, "images": results}, indent=2))
    else:
        for r in results if len(results) <= 20 else []:
            if "error" not in r:
                reasons = [", ".join(u["refusal_reasons"]) for u in r["unindexed"]]
                state.say(f"{r['image']}: {len(r['indexed'])} indexed"
                          + (" (already)" if r["already_indexed"] else "")
                          + (f", {len(reasons)} refused ({'; '.join(reasons)})" if reasons else ""))
        state.say(f"{name}: {summary['faces_indexed']} faces indexed from {summary['images']} images, "
                  f"{summary['already_indexed']} already indexed, {summary['faces_refused']} faces refused, "
                  f"{errors} errors")
    sys.exit(EXIT_INPUT if errors else EXIT_OK)


def _mode_options(f: Any) -> Any:
    """--mode identify|investigate and --max-candidates: what a search is for (docs/identification.md)."""
    f = click.option("--max-candidates", type=click.IntRange(min=1), default=None, help="investigate: at most this "
                     "many candidates (default 10).")(f)
    return click.option("--mode", type=click.Choice([m.value for m in SearchMode], case_sensitive=False),
                        default=SearchMode.IDENTIFY.value, show_default=True, help="identify: matches at a strict, "
                        "measured rate; investigate: ranked candidates, leads that a person must review.")(f)


def _search_lines(r: SearchResult, *, persons: bool = False) -> list[str]:
    """The text of one search result: its matches, or in investigate mode its leads and what they mean."""
    if r.mode is SearchMode.INVESTIGATE:
        op = r.operating_point
        lines = [f"investigation of {r.collection_size:,} faces: {len(r.candidates)} lead"
                 f"{'s' if len(r.candidates) != 1 else ''} (of at most {r.max_candidates}) above the lead floor "
                 f"(false-match rate {op.max_fmr:.2g} per comparison, score >= {op.threshold:.4f}; {op.policy} "
                 f"policy, set by {op.limited_by})", f"  {LEAD_NOTICE}"]
        for c in r.candidates:
            lines.append(f"  lead {c.rank}  {c.face_id}  {c.external_image_id or '-'}  person {c.person_id or '-'}  "
                         f"score {c.score:.3f}  false-match rate {_rate(c.fmr, c.fmr_extrapolated)}  "
                         f"expected strangers this high: {c.expected_strangers:.2g}")
            lines.append(f"    {c.meaning}")
        return lines
    what = "person(s)" if persons else f"match{'es' if len(r.matches) != 1 else ''}"
    lines = [f"searched {r.collection_size:,} faces at {_operating_point_words(r.operating_point)}: "
             f"{len(r.matches)} {what}"]
    if persons:
        lines += [f"  {m.person_id}  score {m.score:.3f}  false-match rate {_rate(m.fmr, m.fmr_extrapolated)}  "
                  f"(face {m.face_id})" for m in r.matches]
    else:
        lines += [f"  {m.face_id}  {m.external_image_id or '-'}  person {m.person_id or '-'}  "
                  f"score {m.score:.3f}  false-match rate {_rate(m.fmr, m.fmr_extrapolated)}" for m in r.matches]
    return lines


@main.command()
@click.argument("name")
@click.argument("image", required=False)
@click.option("--face-id", default=None, help="Search with a face already in the collection instead of an image.")
@_mode_options
@click.option("--max-results", type=click.IntRange(min=1), default=None, help="identify: at most this many matches "
              "(default 10).")
@_threshold_options
@click.option("--all-faces", is_flag=True, help="Search with every face of the image, not just the largest.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (keys in docs/cli.md).")
@_home_option
@click.pass_obj
def search(state: _State, /, name: str, image: str | None, face_id: str | None, mode: str,
           max_candidates: int | None, max_results: int | None, max_fmr: float | None, max_fpir: float | None,
           min_score: float | None, all_faces: bool, as_json: bool, home: Path | None) -> None:
    """Search collection NAME for the face in IMAGE (or --face-id): matches best first, or with
    --mode investigate ranked candidates (leads for a person to review)."""
    if (image is None) == (face_id is None):
        click.echo("facelens: error: give either IMAGE or --face-id", err=True)
        sys.exit(EXIT_USAGE)
    engine = _collection_engine(state, home)
    kw = {"mode": mode, "max_candidates": max_candidates, "max_results": max_results, "max_fmr": max_fmr,
          "max_fpir": max_fpir, "min_score": min_score}
    if face_id is not None:
        results = [_call(engine.search_faces, name, face_id, **kw)]
    else:
        results = _call(engine.search_faces_by_image, name, image, all_faces=all_faces, **kw)
    if as_json:
        doc = results[0].to_dict() if not all_faces else {"results": [r.to_dict() for r in results]}
        doc.update(collection=name)
        click.echo(json.dumps(doc, indent=2))
        return
    for r in results:
        state.say("\n".join(_search_lines(r)))


_MAX_PAGE = 1_000_000  # faces per `faces list` page


@main.group()
def faces() -> None:
    """List and delete the faces stored in a collection."""


@faces.command("list")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, _MAX_PAGE), default=100, help="Faces per page.")
@click.option("--next-token", default=None, help="Token printed by the previous page.")
@_json_and_home
@click.pass_obj
def faces_list(state: _State, /, name: str, limit: int, next_token: str | None, as_json: bool,
               home: Path | None) -> None:
    """List the faces of collection NAME, oldest first, a page at a time."""
    try:
        page, token = _call(_collection_engine(state, home).list_faces, name, limit=limit, next_token=next_token)
    except OverflowError:  # a token made up, not printed by a previous page
        click.echo(f"facelens: error: invalid page token {next_token!r}: pass the token a previous page printed",
                   err=True)
        sys.exit(EXIT_USAGE)
    doc = {"faces": [f.to_dict() for f in page], "next_token": token}
    lines = [f"{f.face_id}  {f.external_image_id or '-'}  person {f.person_id or '-'}" for f in page]
    if token:
        lines.append(f"(more: --next-token {token})")
    _emit(state, as_json, doc, "\n".join(lines) if lines else "no faces")


@faces.command("delete")
@click.argument("name")
@click.argument("face_ids", nargs=-1, required=True)
@_json_and_home
@click.pass_obj
def faces_delete(state: _State, /, name: str, face_ids: tuple[str, ...], as_json: bool, home: Path | None) -> None:
    """Delete faces from collection NAME by id.

    The ids that exist are deleted; if any id is unknown, it is named on stderr and the exit code is 3.
    """
    deleted = _call(_collection_engine(state, home).delete_faces, name, list(face_ids))
    unknown = [f for f in face_ids if f not in deleted]
    _emit(state, as_json, {"deleted": deleted, "unknown": unknown}, f"deleted {len(deleted)} face(s)")
    _unknown_faces(name, unknown)


def _unknown_faces(name: str, unknown: list[str]) -> None:
    """Name the unknown face ids on stderr and exit 3, if there are any."""
    if unknown:
        faces = "face" if len(unknown) == 1 else "faces"
        click.echo(f"facelens: error: no {faces} {', '.join(map(repr, unknown))} in collection {name!r}", err=True)
        sys.exit(EXIT_INPUT)


@main.group()
def person() -> None:
    """Persons: group several faces of one individual; erase everything about someone."""


@person.command("create")
@click.argument("name")
@click.argument("person_id")
@_json_and_home
@click.pass_obj
def person_create(state: _State, /, name: str, person_id: str, as_json: bool, home: Path | None) -> None:
    """Create PERSON_ID in collection NAME."""
    _call(_collection_engine(state, home).create_person, name, person_id)
    _emit(state, as_json, {"created": person_id}, f"created person {person_id!r}")


@person.command("list")
@click.argument("name")
@_json_and_home
@click.pass_obj
def person_list(state: _State, /, name: str, as_json: bool, home: Path | None) -> None:
    """List the persons of collection NAME with their face counts."""
    rows = _call(_collection_engine(state, home).list_persons, name)
    _emit(state, as_json, {"persons": [{"person_id": p, "faces": n} for p, n in rows]},
          "\n".join(f"{p}  {n} face(s)" for p, n in rows) if rows else "no persons")


@person.command("associate")
@click.argument("name")
@click.argument("person_id")
@click.argument("face_ids", nargs=-1, required=True)
@_json_and_home
@click.pass_obj
def person_associate(state: _State, /, name: str, person_id: str, face_ids: tuple[str, ...], as_json: bool,
                     home: Path | None) -> None:
    """Give FACE_IDS to PERSON_ID (unknown ids are named on stderr, exit code 3; the others are given)."""
    done = _call(_collection_engine(state, home).associate_faces, name, person_id, list(face_ids))
    unknown = [f for f in face_ids if f not in done]
    _emit(state, as_json, {"associated": done, "unknown": unknown},
          f"associated {len(done)} face(s) with {person_id!r}")
    _unknown_faces(name, unknown)


@person.command("disassociate")
@click.argument("name")
@click.argument("person_id")
@click.argument("face_ids", nargs=-1, required=True)
@_json_and_home
@click.pass_obj
def person_disassociate(state: _State, /, name: str, person_id: str, face_ids: tuple[str, ...], as_json: bool,
                        home: Path | None) -> None:
    """Take FACE_IDS away from PERSON_ID (the faces stay in the collection)."""
    done = _call(_collection_engine(state, home).disassociate_faces, name, person_id, list(face_ids))
    _emit(state, as_json, {"disassociated": done}, f"disassociated {len(done)} face(s) from {person_id!r}")


@person.command("delete")
@click.argument("name")
@click.argument("person_id")
@_json_and_home
@click.pass_obj
def person_delete(state: _State, /, name: str, person_id: str, as_json: bool, home: Path | None) -> None:
    """Erase PERSON_ID: the person and every face and vector of theirs."""
    deleted = _call(_collection_engine(state, home).delete_person, name, person_id)
    _emit(state, as_json, {"deleted_person": person_id, "deleted_faces": deleted},
          f"erased person {person_id!r} and {len(deleted)} face(s)")


@person.command("search")
@click.argument("name")
@click.argument("image")
@_mode_options
@click.option("--max-results", type=click.IntRange(min=1), default=None, help="identify: at most this many "
              "persons (default 10).")
@_threshold_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as `search`, one match per person).")
@_home_option
@click.pass_obj
def person_search(state: _State, /, name: str, image: str, mode: str, max_candidates: int | None,
                  max_results: int | None, max_fmr: float | None, max_fpir: float | None, min_score: float | None,
                  as_json: bool, home: Path | None) -> None:
    """Search collection NAME for the persons whose best face matches the largest face in IMAGE (with
    --mode investigate: ranked candidate persons, leads for a person to review)."""
    r = _call(_collection_engine(state, home).search_persons_by_image, name, image, mode=mode,
              max_candidates=max_candidates, max_results=max_results, max_fmr=max_fmr, max_fpir=max_fpir,
              min_score=min_score)
    doc = r.to_dict()
    doc.update(collection=name)
    _emit(state, as_json, doc, "\n".join(_search_lines(r, persons=True)))


def run() -> None:
    """Console-script entry point: usage errors exit 2, library errors get one line, no traceback."""
    try:
        main(standalone_mode=True)
    except FacelensError as exc:  # pragma: no cover - commands catch their own
        _fail(exc)


from . import audit as _audit  # noqa: E402  (calibrate and audit: facelens/cli/audit.py)

main.add_command(_audit.calibrate)
main.add_command(_audit.audit)

from . import service as _service  # noqa: E402  (the service's commands: serve, keys, log)

for _command in (_service.serve, _service.keys, _service.log):
    main.add_command(_command)

if __name__ == "__main__":
    run()
