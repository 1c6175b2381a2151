"""What every ``facelens`` command shares: the one table from errors to exit codes, the state the main
group hands each command, and the options several commands take.

Exit codes (stable, documented in docs/cli.md):
  0  success (``compare``: the faces match)
  1  ``compare`` only: the faces do not match at the requested false-match rate
  2  usage error (bad option or argument, a number out of range)
  3  input error: an image could not be read, or an image needed a face and had none; an unknown
     collection, face or person; a folder facelens cannot use
  4  model or calibration error (missing/corrupt model file, no calibration)
  5  refused by a rule: a collection policy, or four eyes in review

``_EXIT_CODES`` below is the one table from errors to these codes. Nothing heavy is imported here: the
engine (numpy, onnxruntime, FAISS) loads when a command first asks :meth:`_State.engine` for it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ..errors import (
    CalibrationError,
    CollectionError,
    FacelensError,
    ImageDecodeError,
    InvalidArgumentError,
    ModelError,
    NoFaceError,
    PolicyError,
    ReviewForbiddenError,
    SearchLogError,
)
from ..server.errors import InsecureSettingsError
from ..types import QualityFilter

if TYPE_CHECKING:
    from ..engine import Engine
    from ..types import OperatingPoint

EXIT_OK, EXIT_NO_MATCH, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL, EXIT_REFUSED = 0, 1, 2, 3, 4, 5

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
    (PolicyError, EXIT_REFUSED),
    (ReviewForbiddenError, EXIT_REFUSED),
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
    """What the main group hands every command (``@click.pass_obj``): whether to be quiet, and how to
    open the engine (lazily, so that ``--help`` and the service commands never load a model)."""

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
                     help="buffalo_s (default), sface, dlib, or a model folder with facelens-model.json."),
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


def _rate(fmr: float, extrapolated: bool) -> str:
    return f"{fmr:.1e}{' (extrapolated)' if extrapolated else ''}"


def _operating_point_words(op: OperatingPoint) -> str:
    """"max false-match rate 1e-05 (...; score >= 0.3580, worst group: overall)" and the like."""
    rate = (f"max FPIR {op.max_fpir:g} over {op.collection_size:,} faces = max false-match rate {op.max_fmr:.2g} "
            f"per comparison" if op.max_fpir is not None else f"max false-match rate {op.max_fmr:.2g}")
    return (f"{rate} (score >= {op.threshold:.4f}{', extrapolated' if op.extrapolated else ''}; "
            f"{op.policy} policy, set by {op.limited_by})")



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
