"""The ``facelens`` command: each command is one call into :class:`facelens.Engine` plus formatting.

One module per area holds its commands; this module registers them on the main group:
  images.py      detect, compare, demo, models
  collection.py  collection, index, search, faces, person
  audit.py       calibrate, audit (over facelens.audit.run)
  service.py     serve, keys, log (over facelens.server)
  video.py       video detect, video search (over Engine.detect_video / search_video), stream (watch_stream)
  report.py      report transparency (over facelens.accountability.transparency)
  review.py      review (the review queue of investigations)
What they share (the one table from errors to exit codes, ``_State``, the common options) is in
_common.py. Command modules import nothing heavy at import time (no engine, numpy or onnxruntime), so
``facelens --help`` stays fast. A new command: a module here, registered in the loop below.
"""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from ..errors import FacelensError
from . import audit, collection, images, report, review, service, video
from ._common import _EXIT_CODES, _exit_code, _fail, _Group, _State

__all__ = ["_EXIT_CODES", "_exit_code", "_fail", "main", "run"]


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


for _command in (images.detect, images.compare, images.demo, images.models,
                 collection.collection, collection.index, collection.search, collection.faces, collection.person,
                 audit.calibrate, audit.audit,
                 service.serve, service.keys, service.log, report.report,
                 video.video, video.stream, review.review):
    main.add_command(_command)


def run() -> None:
    """Console-script entry point: usage errors exit 2, library errors get one line, no traceback."""
    try:
        main(standalone_mode=True)
    except FacelensError as exc:  # pragma: no cover - commands catch their own
        _fail(exc)


if __name__ == "__main__":
    run()
