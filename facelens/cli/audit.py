"""``facelens calibrate`` and ``facelens audit``: thin commands over :mod:`facelens.audit.run`.

facelens.audit (numpy, scipy) is imported inside the commands, never here: ``facelens --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import CalibrationError
from ._common import _call

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["audit", "calibrate"]

_KINDS = click.Choice(["manifest", "lfw", "utkface", "congress", "folder"])


class _DefaultGroup(click.Group):
    """A group whose first argument, when it is not one of its commands, goes to the ``dataset`` command:
    ``facelens audit DATASET`` and ``facelens audit false-matches ...`` both work."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["dataset", *args]
        return super().parse_args(ctx, args)


def _common(f: Any) -> Any:
    options = [
        click.option("--model", default=None, help="buffalo_s (default), sface, dlib, or a model folder."),
        click.option("--workers", type=click.IntRange(min=1), default=2, help="Images embedded in parallel."),
        click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Embedding cache (default: <home>/cache/embeddings-<model>.npz); a rerun reuses it."),
        click.option("--no-cache", is_flag=True, help="Embed every image again and keep nothing."),
        click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="facelens home folder (for the default cache)."),
        click.option("--json", "as_json", is_flag=True, help="Print a JSON summary."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _engine(state: Any, model: str | None, workers: int, home: Path | None) -> Engine:
    import os

    threads = None if os.environ.get("FACELENS_THREADS") else (1 if workers > 1 else 0)
    extra = {k: v for k, v in {"model": model, "threads": threads, "home": str(home) if home else None}.items()
             if v is not None}
    engine: Engine = state.engine(**extra)
    return engine


def _cache(engine: Engine, cache: Path | None, no_cache: bool) -> Path | None:
    if no_cache:
        return None
    if cache is not None:
        return cache
    path = engine.home / "cache" / f"embeddings-{engine.model_name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class _Bars:
    """progress(stage, done, total) drawn as one tqdm bar per stage on a terminal, else nothing."""

    def __init__(self, state: Any) -> None:
        self.show = sys.stderr.isatty() and not state.quiet
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.show:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _read(spec: str, kind: str | None) -> Any:
    from ..audit.dataset import read_dataset

    return read_dataset(spec, kind=kind)  # type: ignore[arg-type]


@click.command()
@click.argument("dataset")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the profile (.npz).")
@click.option("--kind", type=_KINDS, default=None, help="Dataset layout (default: detected).")
@click.option("--name", default=None, help="Profile name (default: <dataset>-<model>).")
@click.option("--duplicates-above", type=float, default=0.9, show_default=True,
              help="Pairs of different subjects scoring this high are set aside as the same photo or person.")
@_common
@click.pass_obj
def calibrate(state: Any, /, dataset: str, out: Path, kind: str | None, name: str | None, duplicates_above: float,
              model: str | None, workers: int, cache: Path | None, no_cache: bool, home: Path | None,
              as_json: bool) -> None:
    """Measure a calibration profile (score -> false-match rate, overall and per group) on DATASET.

    DATASET: a CSV manifest (columns path, subject, then any group columns such as sex, race, age_band),
    or a folder in LFW, UTKFace, congress-past or one-folder-per-person layout. Give the profile to a
    collection with `facelens collection create NAME --calibration PROFILE`.
    """
    from ..audit.run import calibrate as run_calibrate

    engine = _engine(state, model, workers, home)
    ds = _call(_read, dataset, kind)
    bars = _Bars(state)
    try:
        profile = _call(run_calibrate, engine, ds, name=name, workers=workers, cache=_cache(engine, cache, no_cache),
                        duplicates_above=duplicates_above, progress=bars)
    finally:
        bars.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    profile.save(out)
    summary = profile.summary()
    thresholds: dict[str, dict[str, Any]] = {}
    for rate in (1e-3, 1e-4, 1e-5, 1e-6):
        try:
            thr, extrapolated, curve = profile.threshold_detail(rate)
        except CalibrationError as exc:  # too few pairs for this rate: say so, do not invent a threshold
            thresholds[f"{rate:g}"] = {"threshold": None, "refused": str(exc)}
            continue
        thresholds[f"{rate:g}"] = {"threshold": round(thr, 4), "extrapolated": extrapolated, "limited_by": curve}
    warning = profile.meta.get("warning")
    if warning:
        click.echo(f"WARNING: {profile.name}: {warning}", err=True)
    if as_json:
        click.echo(json.dumps({"profile": str(out), **summary, "thresholds": thresholds}, indent=2, default=str))
        return
    state.say(f"{out}: profile {profile.name!r}, {profile.n_pairs:,} impostor pairs, {len(profile.curves)} group "
              f"curve(s); {summary['meta']['set_aside']['impostor_pairs']} near-duplicate pair(s) set aside")
    for target, t in thresholds.items():
        if t["threshold"] is None:
            state.say(f"  max FMR {target}: refused: too few impostor pairs")
            continue
        state.say(f"  max FMR {target}: threshold {t['threshold']:.4f} (worst group: {t['limited_by']}"
                  f"{', extrapolated' if t['extrapolated'] else ''})")


@click.group(cls=_DefaultGroup)
def audit() -> None:
    """Audit the model's error rates on a labelled dataset: `facelens audit DATASET --out DIR`, or the
    false-match experiment: `facelens audit false-matches --probes P --gallery G --out DIR`."""


@audit.command("dataset")
@click.argument("dataset")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.html and report.json.")
@click.option("--kind", type=_KINDS, default=None, help="Dataset layout (default: detected).")
@click.option("--max-fmr", type=float, default=None, help="Operating point to audit (default 1e-5).")
@click.option("--duplicates-above", type=float, default=0.9, show_default=True,
              help="Pairs of different subjects scoring this high are set aside as the same photo or person.")
@_common
@click.pass_obj
def audit_dataset(state: Any, /, dataset: str, out: Path, kind: str | None, max_fmr: float | None,
                  duplicates_above: float, model: str | None, workers: int, cache: Path | None, no_cache: bool,
                  home: Path | None, as_json: bool) -> None:
    """Measure verification, identification and per-group error rates on DATASET; write a report."""
    from ..audit.report import write_report
    from ..audit.run import audit as run_audit

    engine = _engine(state, model, workers, home)
    ds = _call(_read, dataset, kind)
    bars = _Bars(state)
    try:
        doc = _call(run_audit, engine, ds, max_fmr=max_fmr, workers=workers,
                    cache=_cache(engine, cache, no_cache), duplicates_above=duplicates_above, progress=bars)
    finally:
        bars.close()
    html_path, json_path = write_report(doc, out)
    _summarise(state, doc, html_path, json_path, as_json)


@audit.command("false-matches")
@click.option("--probes", required=True, help="Dataset of the people searched for (one probe each; a second "
              "photo, if any, is their genuine mate).")
@click.option("--gallery", "galleries", required=True, multiple=True, help="Dataset of strangers (repeatable).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.html and report.json.")
@click.option("--exclude", "excludes", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="CSV of known overlaps: probe subject (or name), gallery subject (repeatable).")
@_common
@click.pass_obj
def audit_false_matches(state: Any, /, probes: str, galleries: tuple[str, ...], out: Path,
                        excludes: tuple[str, ...], model: str | None, workers: int, cache: Path | None,
                        no_cache: bool, home: Path | None, as_json: bool) -> None:
    """The ACLU experiment: search every probe against a gallery of strangers and count false matches."""
    from ..audit.report import write_report
    from ..audit.run import false_match_audit, read_exclusions

    engine = _engine(state, model, workers, home)
    p = _call(_read, probes, None)
    gs = [_call(_read, g, None) for g in galleries]
    exclude = [pair for path in excludes for pair in _call(read_exclusions, path)]
    bars = _Bars(state)
    try:
        doc = _call(false_match_audit, engine, p, gs, exclude=exclude, workers=workers,
                    cache=_cache(engine, cache, no_cache), progress=bars)
    finally:
        bars.close()
    html_path, json_path = write_report(doc, out)
    _summarise(state, doc, html_path, json_path, as_json)


def _summarise(state: Any, doc: dict[str, Any], html_path: Path, json_path: Path, as_json: bool) -> None:
    op = doc["operating_point"]
    lines = [f"report: {html_path}", f"numbers: {json_path}",
             f"operating point: score >= {op['threshold']:.4f} (max FMR {op['target_fmr']:.2g}"
             f"{', extrapolated' if op.get('extrapolated') else ''})"]
    diff = doc.get("differentials")
    if diff:
        lines.append(f"overall: {diff['overall_fmr']['plain']}")
        for col in diff["columns"]:
            ratio = col["fmr_ratio"]
            lines.append(f"{col['column']}: {ratio['explanation']}")
            if col["breaking_labels"]:
                lines.append(f"  above the target FMR: {', '.join(col['breaking_labels'])}")
    fm = doc.get("false_match_experiment")
    if fm:
        for p in fm["points"]:
            r = p["probes_with_false_match"]
            lines.append(f"{p['label']} (score >= {p['threshold']:.4f}): {r['k']} of {r['n']} probes got a false "
                         f"candidate")
    if as_json:
        click.echo(json.dumps({"report": str(html_path), "json": str(json_path), "operating_point": op}, indent=2))
    else:
        state.say("\n".join(lines))
