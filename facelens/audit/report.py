"""The audit report: one self-contained HTML file that opens offline, and ``report.json`` with the same numbers.

The report reads one dict, the *audit*, built from the ``to_dict()`` of :mod:`facelens.audit.metrics`
results (:func:`build_audit` assembles it)::

    {
      "model":            {"name": str, "sha256": str, ...},            # any further keys are listed
      "dataset":          {"name": str, "description": str,             # where the data comes from
                           "summary": {str: number | str},              # counts: images, subjects...
                           "caveat": str},                              # optional; a default is shown
      "operating_point":  {"threshold": float, "target_fmr": float, "policy": str,
                           "extrapolated": bool},                       # optional flag
      "verification":     Verification.to_dict(),                      # optional sections from here on
      "differentials":    DemographicDifferentials.to_dict(),
      "identification":   Identification.to_dict(),
      "false_match_experiment": FalseMatchExperiment.to_dict() + {"title": str, "description": str},
      "fpir_check": FpirCheck.to_dict(): predicted vs measured FPIR at the search default, by gallery size,
      "near_duplicates":  NearDuplicates.to_dict(),
    }

Every rate in it is a ``Rate.to_dict()`` (``k``, ``n``, ``value``, ``ci_low``, ``ci_high``, ``plain``...),
shown with its plain-words reading. Sections come in this order: summary, DET curves, TAR at FMR,
demographic differentials with the cross-group heatmaps, identification, the false-match experiment (with
thumbnails of the highest-scoring stranger pairs when ``probe_image``/``gallery_image`` paths are set and
readable), then the dataset and its caveats. Plots are PNG images made with matplotlib's Agg canvas and
inlined as base64; there is no script, no external stylesheet, font or link.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._files import write_files
from ..errors import InvalidArgumentError

__all__ = ["build_audit", "render_html", "write_report"]

DEFAULT_CAVEAT = (
    "Demographic labels are coarse annotations made by others, not how the people pictured describe "
    "themselves, and some are wrong. Per-group figures show how this model behaves on this data; they "
    "are indicative, not a verdict on any group.")
STATISTICS_CAVEAT = (
    "Intervals are exact 95% (Clopper-Pearson) intervals assuming independent comparisons. Comparisons "
    "are not independent (every photo takes part in many pairs, every person in many photos), so the real "
    "uncertainty is wider. A rate below one in the number of comparisons made cannot be measured and is "
    "marked as such.")
THUMB_PX = 96


def build_audit(
    *,
    model: Mapping[str, Any],
    dataset: Mapping[str, Any],
    operating_point: Mapping[str, Any],
    verification: Any = None,
    differentials: Any = None,
    identification: Any = None,
    false_match_experiment: Any = None,
    near_duplicates: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """The audit dict :func:`render_html` reads: metric results (anything with ``to_dict()``, or dicts
    already) under their keys; ``None`` sections are left out. ``extra`` keys are kept as given."""
    audit: dict[str, Any] = {"model": dict(model), "dataset": dict(dataset), "operating_point": dict(operating_point)}
    sections = {"verification": verification, "differentials": differentials, "identification": identification,
                "false_match_experiment": false_match_experiment, "near_duplicates": near_duplicates}
    for key, value in sections.items():
        if value is not None:
            audit[key] = value.to_dict() if hasattr(value, "to_dict") else dict(value)
    audit.update(extra)
    return audit


def write_report(audit: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.json`` into ``out_dir`` (created if needed); returns both paths."""
    try:
        text = json.dumps(audit, indent=1, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"audit is not JSON-able ({exc}); build it from the metrics' to_dict()") from exc
    html_path, json_path = write_files(out_dir, {"report.html": render_html(audit), "report.json": text + "\n"})
    return html_path, json_path


# ---------------------------------------------------------------------------------------------------
# Small formatting helpers


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(v: float | None) -> str:
    """A rate for the eye: 2.6x10^-5 below 1%, a percentage above (never rounded up to 100%)."""
    if v is None:
        return "&ndash;"
    if v == 0:
        return "0"
    if v < 0.01:
        mant, exp = f"{v:.1e}".split("e")
        return f"{mant}&times;10<sup>{int(exp)}</sup>"
    if v <= 0.99:
        return f"{100 * v:.3g}%"
    text = f"{100 * v:.2f}"
    return "&gt;99.99%" if text == "100.00" and v < 1 else f"{text.rstrip('0').rstrip('.')}%"


def _one_in(v: float) -> str:
    if v <= 0:
        return "never"
    x = 1 / v
    if x >= 100:
        digits = int(math.floor(math.log10(x))) - 1
        return f"1 in {round(x, -digits):,.0f}"
    return f"1 in {x:.2g}"


def _badge(text: str, kind: str = "warn") -> str:
    return f'<span class="badge {kind}">{_e(text)}</span>'


def _rate(r: Mapping[str, Any] | None, *, words: bool = True) -> str:
    """A rate cell: value, interval, and its plain-words reading."""
    if r is None:
        return "&ndash;"
    if not r.get("n"):
        return _badge("not measured: no data", "muted")
    ci = f'<span class="ci">[{_num(r["ci_low"])}, {_num(r["ci_high"])}]</span>'
    out = f'<span class="val">{_num(r["value"])}</span> {ci}'
    if r.get("k") == 0:
        out += " " + _badge("upper bound only", "muted")
    if r.get("note"):
        out += " " + _badge(r["note"])
    if words:
        out += f'<div class="plain">{_e(r.get("plain", ""))}</div>'
    return out


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" alt="plot" src="data:image/png;base64,{data}">'


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _thumbnail(path: str | None) -> str:
    if not path:
        return '<div class="thumb missing">no image</div>'
    try:
        from PIL import Image

        with Image.open(path) as src:
            im = src.convert("RGB")
        im.thumbnail((THUMB_PX, THUMB_PX))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    except (OSError, ValueError):
        return f'<div class="thumb missing">image not readable<br>{_e(Path(path).name)}</div>'
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="thumb" alt="{_e(Path(path).name)}" src="data:image/jpeg;base64,{data}">'


# ---------------------------------------------------------------------------------------------------
# Plots


def _det_plot(curves: Sequence[Mapping[str, Any]], *, target_fmr: float | None, threshold: float | None,
              title: str) -> str:
    fig = _figure(6.4, 4.3)
    ax = fig.add_subplot()
    drawn = False
    for c in curves:
        fmr, fnmr, thr = c.get("fmr", []), c.get("fnmr", []), c.get("thresholds", [])
        # a log axis cannot show 0: points without a false match or a false non-match are left out
        pts = [(f, fn, t) for f, fn, t in zip(fmr, fnmr, thr, strict=True) if f > 0 and fn > 0]
        if not pts:
            continue
        style = {"color": "black", "linestyle": "--", "linewidth": 1.2} if c.get("label") == "all" else {}
        label = f'{c.get("label")} ({c.get("n_impostor", 0):,} impostor pairs)'
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)[0]
        if threshold is not None:
            at = [p for p in pts if p[2] <= threshold + 1e-9]
            if at:
                ax.plot([at[-1][0]], [at[-1][1]], marker="o", color=line.get_color(), markersize=6)
        drawn = True
    if not drawn:
        return '<p class="muted">No curve to draw (no genuine or no impostor pairs).</p>'
    if target_fmr is not None:
        ax.axvline(target_fmr, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"target FMR {target_fmr:g}", (target_fmr, 1), xytext=(3, -12), textcoords="offset points",
                    fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false-match rate (FMR): share of different-person comparisons accepted")
    ax.set_ylabel("false non-match rate (FNMR)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig)


def _heatmap(labels: Sequence[str], cross: Sequence[Sequence[Mapping[str, Any]]], *, column: str) -> str:
    import numpy as np

    n = len(labels)
    if n == 0:
        return ""
    vals = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            r = cross[i][j]
            if r.get("n") and r.get("k"):
                vals[i, j] = math.log10(r["k"] / r["n"])
    fig = _figure(1.3 + 1.05 * n, 0.9 + 0.85 * n)
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(vals)
    finite = vals[np.isfinite(vals)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-6.0, -1.0)
    if hi - lo < 1:
        lo, hi = lo - 0.5, hi + 0.5
    from matplotlib import colormaps

    cmap = colormaps["YlOrRd"].with_extremes(bad="#eeeeee")
    im = ax.imshow(masked, cmap=cmap, vmin=lo, vmax=hi)
    for i in range(n):
        for j in range(n):
            r = cross[i][j]
            if not r.get("n"):
                text = "no pairs"
            elif not r.get("k"):
                text = f"0 of\n{r['n']:,}"
            else:
                v = r["k"] / r["n"]
                text = f"{v:.1e}\n{_one_in(v)}"
            dark = np.isfinite(vals[i, j]) and (vals[i, j] - lo) / (hi - lo) > 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=7.5, color="white" if dark else "black")
    ax.set_xticks(range(n), [str(x) for x in labels])
    ax.set_yticks(range(n), [str(x) for x in labels])
    ax.set_title(f"False-match rate between {column} labels (log scale)", fontsize=10)
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("log10 FMR", fontsize=8)
    return _png(fig)


def _growth_plot(growth: Sequence[Mapping[str, Any]], threshold: float) -> str:
    if not growth:
        return ""
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    sizes = [g["gallery_size"] for g in growth]
    for key, name, color in (("fpir", "FPIR: non-mated searches with a candidate", "tab:red"),
                             ("fnir", "FNIR: mated searches that miss their mate", "tab:blue")):
        v = [100 * (g[key]["value"] or 0) for g in growth]
        lo = [100 * g[key]["ci_low"] for g in growth]
        hi = [100 * g[key]["ci_high"] for g in growth]
        ax.plot(sizes, v, marker="o", color=color, label=name)
        ax.fill_between(sizes, lo, hi, color=color, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("gallery size (enrolled people)")
    ax.set_ylabel("% of searches")
    ax.set_title(f"Search at threshold {threshold:.4g} as the gallery grows (shaded: 95% interval)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------------------------------------------
# Sections


def _summary(a: Mapping[str, Any]) -> str:
    op = a.get("operating_point", {})
    thr, target = op.get("threshold"), op.get("target_fmr")
    parts = ["<h2>Summary</h2>"]
    shown = f"{thr:.4f}" if isinstance(thr, float) else thr  # 0.4332, not 0.43320000000000003
    line = f"The default operating point is a score threshold of <b>{_e(shown)}</b>"
    if target:
        line += (f", chosen to keep the false-match rate at or below <b>{target:.2g}</b>: about "
                 f"<b>{_one_in(target)}</b> comparisons of photos of two different people may be wrongly "
                 f"declared a match")
    line += "."
    if op.get("max_fpir") is not None:
        line += (f" That is the search default: a search of {op.get('collection_size', 0):,} faces for someone who is "
                 f"not among them returns anyone at most {op['max_fpir']:g} of the time.")
    if op.get("policy"):
        line += f" Policy: {_e(op['policy'])}."
    if op.get("extrapolated"):
        line += " " + _badge("threshold extrapolated beyond the measured data")
    parts.append(f"<p>{line}</p>")
    d, v = a.get("differentials"), a.get("verification")
    overall = d or v
    if overall:
        fmr = overall.get("overall_fmr") or overall.get("fmr")
        fnmr = overall.get("overall_fnmr") or overall.get("fnmr")
        parts.append("<p>Measured on this data at that threshold:</p><ul>")
        if fmr:
            parts.append(f"<li><b>False matches:</b> {_e(fmr['plain'])} (95% interval {_num(fmr['ci_low'])} to "
                         f"{_num(fmr['ci_high'])}).</li>")
        if fnmr:
            parts.append(f"<li><b>Missed matches:</b> {_e(fnmr['plain'])}.</li>")
        parts.append("</ul>")
    if d:
        items = []
        for col in d.get("columns", []):
            ratio = col["fmr_ratio"]
            worst = next((x for x in col["per_label"] if x["label"] == ratio.get("highest_label")), None)
            text = f"<b>By {_e(col['column'])}:</b> "
            if worst is not None and ratio["kind"] != "undefined":
                text += (f"the highest false-match rate is for <b>{_e(worst['label'])}</b>: "
                         f"{_e(worst['fmr']['plain'])}. ")
            if ratio["kind"] == "lower_bound":
                text += f"Max/min ratio: <b>at least {ratio['ratio']:.3g}</b> {_badge('lower bound', 'muted')} &mdash; "
            elif ratio["kind"] == "estimate":
                text += f"Max/min ratio: <b>{ratio['ratio']:.3g}</b> &mdash; "
            text += _e(ratio["explanation"]) + ". "
            breaking = col.get("breaking_labels", [])
            if breaking:
                text += _badge("above target") + " " + ", ".join(f"<b>{_e(x)}</b>" for x in breaking)
                text += f" {'has' if len(breaking) == 1 else 'have'} a measured false-match rate above the target."
            elif col.get("per_label"):
                text += "No label's measured false-match rate is above the target."
            items.append(f"<li>{text}</li>")
        if items:
            parts.append("<p>Demographic differentials (pairs of photos within each group):</p><ul>" + "".join(items)
                         + "</ul>")
    ident = a.get("identification")
    if ident:
        p = next((x for x in ident.get("points", []) if x.get("measurable") and abs(x["target_fpir"] - 0.01) < 1e-9),
                 None)
        text = f"<b>1:N search</b> (gallery of {ident['n_gallery']:,}): {_e(ident['rank1']['plain'])}."
        if p:
            text += (f" Tuned so that about 1 in 100 searches for someone not enrolled returns a candidate "
                     f"(threshold {p['threshold']:.4g}), {_e(p['fnir']['plain'])}.")
        parts.append(f"<p>{text}</p>")
    fme = a.get("false_match_experiment")
    if fme:
        items = [f"<li>{_e(pt['label'])} (threshold {pt['threshold']:.4g}): "
                 f"{_e(pt['probes_with_false_match']['plain'])}.</li>" for pt in fme.get("points", [])]
        parts.append(f"<p><b>Strangers searched against strangers</b> ({fme['n_probes']:,} people against "
                     f"{fme['n_gallery']:,} photos of others):</p><ul>{''.join(items)}</ul>")
    parts.append(f'<p class="muted">{_e(STATISTICS_CAVEAT)}</p>')
    return "\n".join(parts)


def _det_section(a: Mapping[str, Any]) -> str:
    v = a.get("verification")
    if not v:
        return ""
    op = a.get("operating_point", {})
    target, thr = op.get("target_fmr"), op.get("threshold")
    parts = ["<h2>Error trade-off (DET curves)</h2>",
             "<p>Each curve shows, as the threshold moves, how many different-person comparisons are wrongly "
             "accepted (left: fewer) against how many same-person comparisons are wrongly rejected (down: fewer). "
             "Lower and further left is better. Dots mark the operating threshold. Curves stop at the smallest "
             "false-match rate the data can measure (one in the number of pairs).</p>"]
    parts.append(_det_plot([v["det"]], target_fmr=target, threshold=thr, title="All pairs"))
    for column, curves in v.get("det_by_group", {}).items():
        if curves:
            parts.append(_det_plot([v["det"], *curves.values()], target_fmr=target, threshold=thr,
                                   title=f"Pairs within each {column} label (dashed: all pairs)"))
    return "\n".join(parts)


def _tar_section(a: Mapping[str, Any]) -> str:
    v = a.get("verification")
    if not v:
        return ""
    rows = []
    for r in v.get("tar_at_fmr", []):
        if not r["measurable"]:
            rows.append([f"{r['target_fmr']:g}", "&ndash;", "&ndash;", _badge("not measurable") + " " + _e(r["note"])])
            continue
        rows.append([f"{r['target_fmr']:g} ({_one_in(r['target_fmr'])})", f"{r['threshold']:.4f}", _rate(r["fmr"]),
                     _rate(r["tar"])])
    parts = ["<h2>True-accept rate at fixed false-match rates</h2>",
             "<p>For each target false-match rate, the lowest threshold that meets it on this data, the rate "
             "actually measured there, and the share of same-person comparisons accepted (TAR = 1 - FNMR). The "
             "interval on TAR covers the same-person pairs only; the threshold is itself an estimate.</p>",
             _table(["target FMR", "threshold", "measured FMR", "TAR (accepted same-person pairs)"], rows)]
    lfw = v.get("lfw")
    if lfw:
        parts.append(f"<p>LFW protocol (View 2, {lfw['n_pairs']:,} pairs, 10-fold): accuracy "
                     f"<b>{100 * lfw['mean']:.2f}% &plusmn; {100 * lfw['std']:.2f}%</b> (each fold's threshold chosen "
                     f"on the other folds).</p>")
    return "\n".join(parts)


def _differentials_section(a: Mapping[str, Any]) -> str:
    d = a.get("differentials")
    if not d:
        return ""
    parts = ["<h2>Demographic differentials</h2>",
             f"<p>At threshold {d['threshold']:.4g}, error rates of pairs whose two photos both carry the label. A "
             f"label is marked when its measured false-match rate is above the target {d['target_fmr']:g}. Max/min "
             f"ratios use only labels with at least {d['min_impostor_pairs']:,} different-person pairs (false "
             f"matches) or {d['min_genuine_pairs']:,} same-person pairs (missed matches).</p>"]
    for col in d.get("columns", []):
        parts.append(f"<h3>By {_e(col['column'])}</h3>")
        if not col["per_label"]:
            parts.append(f"<p class='muted'>No labelled images ({col['n_unknown']:,} without a label).</p>")
            continue
        rows = []
        for x in col["per_label"]:
            flag = ""
            if x["clearly_breaks_target"]:
                flag = _badge("above target (even at the low end of its interval)")
            elif x["breaks_target"]:
                flag = _badge("above target")
            rows.append([f"<b>{_e(x['label'])}</b>", f"{x['n_images']:,}", _rate(x["fmr"]) + flag, _rate(x["fnmr"])])
        parts.append(_table(["label", "images", "false-match rate (different people, same label)",
                             "false non-match rate (same person)"], rows))
        if col["n_unknown"]:
            parts.append(f"<p class='muted'>{col['n_unknown']:,} images have no {_e(col['column'])} label; they count "
                         f"in the overall figures only.</p>")
        for key, name in (("fmr_ratio", "False matches"), ("fnmr_ratio", "Missed matches")):
            r = col[key]
            head = {"estimate": f"{r['ratio']:.3g}" if r["ratio"] is not None else "",
                    "lower_bound": f"at least {r['ratio']:.3g}" if r["ratio"] is not None else "",
                    "undefined": "not measurable"}[r["kind"]]
            badge = _badge("lower bound", "muted") if r["kind"] == "lower_bound" else ""
            parts.append(f"<p><b>{name}, max/min ratio: {head}</b> {badge} &mdash; {_e(r['explanation'])}.</p>")
        parts.append("<p>The heatmap shows the false-match rate of pairs across labels (one photo from the row label, "
                     "one from the column label). Off-diagonal cells are usually lower: people of different labels "
                     "look less alike.</p>")
        parts.append(_heatmap(col["labels"], col["cross_fmr"], column=col["column"]))
    return "\n".join(parts)


def _identification_section(a: Mapping[str, Any]) -> str:
    ident = a.get("identification")
    if not ident:
        return ""
    defs = ident.get("definitions", {})
    parts = ["<h2>Identification (1:N search)</h2>",
             f"<p>{_e(defs.get('design', '').capitalize())}. Gallery: <b>{ident['n_gallery']:,}</b> people "
             f"({ident['n_distractors']:,} of them distractors); <b>{ident['n_mated']:,}</b> searches for enrolled "
             f"people and <b>{ident['n_nonmated']:,}</b> for people not enrolled.</p>",
             "<ul>" + "".join(f"<li><b>{_e(k.upper())}</b>: {_e(v)}.</li>" for k, v in defs.items() if k != "design")
             + "</ul>",
             f"<p>Rank 1: {_rate(ident['rank1'])}</p><p>Rank {ident['rank']}: {_rate(ident['rank_n'])}</p>"]
    rows = []
    for p in ident.get("points", []):
        if not p["measurable"]:
            rows.append([f"{p['target_fpir']:g}", "&ndash;", _badge("not measurable") + " " + _e(p["note"]), "&ndash;"])
        else:
            rows.append([f"{p['target_fpir']:g}", f"{p['threshold']:.4f}", _rate(p["fpir"]), _rate(p["fnir"])])
    parts.append(_table(["target FPIR", "threshold", "FPIR (not enrolled, got a candidate)",
                         f"FNIR (enrolled, mate not in top {ident['rank']} above threshold)"], rows))
    if ident.get("growth") and ident.get("growth_threshold") is not None:
        t = ident["growth_threshold"]
        parts.append(f"<h3>As the gallery grows</h3><p>The same threshold ({t:.4g}) in random nested subsets of the "
                     f"gallery: the more people enrolled, the more likely a stranger resembles one of them.</p>")
        parts.append(_growth_plot(ident["growth"], t))
        parts.append(_table(["gallery size", "FPIR", "FNIR (mates in the subset)", "rank 1"],
                            [[f"{g['gallery_size']:,}", _rate(g["fpir"]), _rate(g["fnir"]),
                              _rate(g["rank1"], words=False)] for g in ident["growth"]]))
    measurable = [p for p in ident.get("points", []) if p["measurable"]]
    for column, rows_g in ident.get("groups", {}).items():
        if not rows_g or not measurable:
            continue
        i = ident["points"].index(measurable[len(measurable) // 2])
        p = ident["points"][i]
        parts.append(f"<h3>By {_e(column)} (probe photo's label), at threshold {p['threshold']:.4g} "
                     f"(target FPIR {p['target_fpir']:g})</h3>")
        parts.append(_table(["label", "rank 1", "FPIR", "FNIR"],
                            [[f"<b>{_e(g['label'])}</b>", _rate(g["rank1"], words=False), _rate(g["fpir"][i]),
                              _rate(g["fnir"][i])] for g in rows_g]))
    return "\n".join(parts)


def _false_match_section(a: Mapping[str, Any]) -> str:
    fme = a.get("false_match_experiment")
    if not fme:
        return ""
    parts = [f"<h2>{_e(fme.get('title', 'False-match experiment: strangers searched against strangers'))}</h2>",
             "<p>In 2018 the ACLU searched the 535 members of Congress against 25,000 arrest photos with Amazon "
             "Rekognition at its default 80% similarity and got 28 false matches. This experiment repeats the idea: "
             f"{fme['n_probes']:,} people searched against {fme['n_gallery']:,} photos of other people, so every "
             "candidate returned is a false match.</p>"]
    if fme.get("description"):
        parts.append(f"<p>{_e(fme['description'])}</p>")
    if fme.get("n_excluded_pairs"):
        parts.append(f"<p class='muted'>{fme['n_excluded_pairs']:,} (person, photo) pairs known to be the same person "
                     f"were left out.</p>")
    rows = []
    for pt in fme.get("points", []):
        rows.append([f"<b>{_e(pt['label'])}</b><div class='plain'>{_e(pt['description'])}</div>",
                     f"{pt['threshold']:.4g}", _rate(pt["probes_with_false_match"]), f"{pt['false_candidates']:,}",
                     _rate(pt["mates_found"]) if pt.get("mates_found") else "&ndash;"])
    parts.append(_table(["operating point", "threshold", "people with at least one false match", "false candidates",
                         "people who still match their own second photo"], rows))
    columns = sorted({c for pt in fme.get("points", []) for c in pt.get("by_group", {})})
    for column in columns:
        labels = sorted({lab for pt in fme["points"] for lab in pt["by_group"].get(column, {})})
        rows = [[f"<b>{_e(lab)}</b>", *(_rate(pt["by_group"][column].get(lab), words=False) for pt in fme["points"])]
                for lab in labels]
        parts.append(f"<h3>By {_e(column)}</h3>")
        parts.append(_table(["label", *(_e(pt["label"]) for pt in fme["points"])], rows))
    top = fme.get("top_pairs", [])
    if top:
        parts.append("<h3>Highest-scoring stranger pairs</h3><p>Different people, by the data's labels. Look at them: "
                     "a pair that is in fact one person is a labelling error, not a false match.</p>")
        if any(t.get("probe_image") or t.get("gallery_image") for t in top):
            cells = []
            for t in top:
                cells.append(f'<div class="pair">{_thumbnail(t.get("probe_image"))}{_thumbnail(t.get("gallery_image"))}'
                             f'<div class="cap">{t["score"]:.3f}<br>{_e(t["probe_id"])}<br>vs {_e(t["gallery_id"])}'
                             f"</div></div>")
            parts.append(f'<div class="pairs">{"".join(cells)}</div>')
        else:
            parts.append(_table(["score", "person searched", "gallery photo of"],
                                [[f"{t['score']:.4f}", _e(t["probe_id"]), _e(t["gallery_id"])] for t in top]))
    return "\n".join(parts)


def _fpir_check_section(a: Mapping[str, Any]) -> str:
    fc = a.get("fpir_check")
    if not fc:
        return ""
    parts = ["<h2>Honesty check: the FPIR the calibration predicts vs the FPIR measured</h2>",
             f"<p>At the search default (max FPIR {fc['max_fpir']:g}), {fc['searches']:,} searches for people who are "
             "not in the gallery, against galleries of growing size. <i>Predicted</i>: 1 - (1 - FMR)<sup>N</sup> with "
             "the calibration's estimate of the false-match rate at the search's threshold; <i>bound</i>: the same "
             "with its upper confidence bound, which the threshold keeps at or below the target; <i>measured</i>: "
             f"the share of searches that returned any candidate. <i>Consistent</i>: the prediction lies within a "
             f"factor of {fc['factor']:g} of the measured rate's 95% interval.</p>"]
    if fc.get("description"):
        parts.append(f"<p>{_e(fc['description'])}</p>")
    rows = []
    for pt in fc.get("points", []):
        ok = pt["consistent"]
        over = (pt["measured"]["value"] or 0.0) > fc["max_fpir"]
        rows.append([f"{pt['gallery_size']:,}", f"{pt['threshold']:.4f}" + (" " + _badge("extrapolated", "muted")
                                                                             if pt["extrapolated"] else ""),
                     f"{pt['max_fmr']:.2e}", f"{pt['predicted_fpir']:.2e}", f"{pt['bound_fpir']:.2e}",
                     _rate(pt["measured"]) + (" " + _badge("above the target") if over else ""),
                     "yes" if ok else _badge("no")])
    parts.append(_table(["gallery faces", "threshold", "max FMR per comparison", "predicted FPIR", "bound",
                         "measured FPIR", "consistent"], rows))
    if fc.get("duplicates_set_aside"):
        parts.append(f"<p class='muted'>{fc['duplicates_set_aside']:,} probe/gallery pairs scoring "
                     f"0.9 or more were set aside as the same photo.</p>")
    return "\n".join(parts)


def _dataset_section(a: Mapping[str, Any]) -> str:
    ds, model = a.get("dataset", {}), a.get("model", {})
    parts = ["<h2>Data and model</h2>", f"<p><b>Dataset:</b> {_e(ds.get('name', 'unnamed'))}. "
             f"{_e(ds.get('description', ''))}</p>"]
    summary = ds.get("summary", {})
    if summary:
        parts.append(_table(["", ""], [[_e(k), f"{v:,}" if isinstance(v, int) else _e(v)] for k, v in summary.items()],
                            cls="kv"))
    parts.append(f"<p><b>About the labels.</b> {_e(ds.get('caveat') or DEFAULT_CAVEAT)}</p>")
    nd = a.get("near_duplicates")
    if nd:
        parts.append(f"<p><b>Set aside:</b> {nd['count']:,} {_e(nd['rule'])}.</p>")
    parts.append(_table(["model", ""], [[_e(k), _e(v)] for k, v in model.items()], cls="kv"))
    parts.append(f'<p class="muted">{_e(STATISTICS_CAVEAT)}</p>')
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1a1a1a;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.35em .6em;
vertical-align:top;text-align:left}th{background:#f4f4f4}table.kv th{display:none}
.plain{color:#555;font-size:.85em;max-width:34em}.ci{color:#666;font-size:.85em}.val{font-weight:600}
.muted{color:#666}.badge{display:inline-block;padding:0 .45em;border-radius:.6em;font-size:.78em;font-weight:600}
.badge.warn{background:#fde2e1;color:#9b1c1c;border:1px solid #f3a5a2}
.badge.muted{background:#eef;color:#335;border:1px solid #ccd}
img.plot{max-width:100%;display:block;margin:.8em 0}.pairs{display:flex;flex-wrap:wrap;gap:10px}
.pair{border:1px solid #ccc;padding:4px;text-align:center;font-size:.8em}.pair img{margin:1px}
.thumb.missing{display:inline-block;width:96px;height:96px;background:#eee;color:#777;font-size:.75em}
.cap{max-width:200px;overflow-wrap:anywhere}
"""


def render_html(audit: Mapping[str, Any]) -> str:
    """The report as one HTML page (see the module docstring for the dict it reads)."""
    for key in ("model", "dataset", "operating_point"):
        if not isinstance(audit.get(key), Mapping):
            raise InvalidArgumentError(f"audit needs a {key!r} dict (see facelens.audit.report)")
    model, ds = audit["model"], audit["dataset"]
    title = f"facelens audit: {model.get('name', 'model')} on {ds.get('name', 'dataset')}"
    body = [f"<h1>{_e(title)}</h1>"]
    if audit.get("created"):
        body.append(f'<p class="muted">Created: {_e(audit["created"])}</p>')
    for section in (_summary, _det_section, _tar_section, _differentials_section, _identification_section,
                    _false_match_section, _fpir_check_section, _dataset_section):
        body.append(section(audit))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")
