"""``facelens report transparency``: the transparency report of a period, over
:mod:`facelens.accountability.transparency` (docs/identification.md, "Transparency reports")."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import _home_option, _State

__all__ = ["report"]


@click.group()
def report() -> None:
    """Reports for the public and oversight bodies, counted from the signed log."""


@report.command("transparency")
@click.option("--since", default=None, metavar="TIME",
              help="Start of the period, included (ISO 8601, UTC if no zone; default: the log's first entry).")
@click.option("--until", default=None, metavar="TIME",
              help="End of the period, not included (ISO 8601, UTC if no zone; default: now).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write transparency.html and transparency.json into (created if needed).")
@click.option("--checkpoint", "checkpoint", type=click.Path(exists=True, path_type=Path), default=None,
              help="A signed checkpoint (`facelens log checkpoint`) kept elsewhere, or a folder of them: the "
                   "report says whether the log still matches it (default: <home>/service/checkpoints/).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_home_option
@click.pass_obj
def transparency(state: _State, since: str | None, until: str | None, out: Path, checkpoint: Path | None,
                 as_json: bool, home: Path | None) -> None:
    """Write the transparency report of a period: searches per collection, purpose, mode and key;
    candidates and matches returned; reviews; enrolments and erasures; operating points with the audited
    per-group false-match rates; the log's verification status. Read-only."""
    from ..accountability.transparency import build_transparency, write_transparency
    from ..store import default_home

    doc = build_transparency(home or default_home(), since, until, checkpoint=checkpoint)
    html_path, json_path = write_transparency(doc, out)
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    t, v = doc["totals"], doc["log"]["verification"]
    period = doc["period"]
    state.say(f"period {period['since'] or 'start of the log'} to {period['until']}: {t['searches']:,} searches "
              f"({t['identify']:,} identify, {t['investigate']:,} investigate) of {t['collections']:,} "
              f"collection{'' if t['collections'] == 1 else 's'}; "
              f"{t['matches']:,} matches, {t['candidates']:,} candidates; reviews {t['reviews_confirmed']:,} "
              f"confirmed, {t['reviews_rejected']:,} rejected, {t['reviews_pending']:,} pending; "
              f"{t['faces_enrolled']:,} faces enrolled, {t['faces_erased']:,} erased")
    if v["ok"]:
        state.say(f"log: {v['status']} ({v['entries']:,} entries, head {v['head_seq']})")
    else:
        click.echo(f"log: {v['status'].upper()}: {v['problem']}", err=True)
    cp = doc["log"]["checkpoint"]
    if cp is not None:
        state.say(f"checkpoint of entry {cp['seq']}: {'matches the log' if cp['log_matches'] else 'DOES NOT MATCH'}")
    state.say(f"wrote {html_path} and {json_path}")
