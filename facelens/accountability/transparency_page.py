"""The transparency report as one HTML page for the public (:func:`render_transparency_html`).

Self-contained: inline CSS, no script, no external stylesheet, font or image, so that it can be published
as one file and read offline. Every text taken from the log (purposes, key names, user names, policy
values) is escaped. It reads the dict of :func:`facelens.accountability.transparency.build_transparency`;
the visual style follows the audit report's (facelens/audit/report.py).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["render_transparency_html"]



def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _n(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else _e(x)


def _rate(v: Any) -> str:
    """A rate for the eye: 3.7&times;10<sup>-4</sup>, or a percentage from 1%."""
    if not isinstance(v, (int, float)):
        return "&ndash;"
    if v == 0:
        return "0"
    if v < 0.01:
        mant, exp = f"{v:.1e}".split("e")
        return f"{mant}&times;10<sup>{int(exp)}</sup>"
    return f"{100 * v:.3g}%"


def _one_in(v: Any) -> str:
    if not isinstance(v, (int, float)) or v <= 0:
        return ""
    x = 1 / v
    if x < 100:
        return f"about 1 in {x:.2g}"
    digits = int(math.floor(math.log10(x))) - 1
    return f"about 1 in {round(x, -digits):,.0f}"


def _when(text: Any) -> str:
    """An ISO time as ``2026-11-30 14:05 UTC`` (the JSON keeps the full time)."""
    try:
        t = dt.datetime.fromisoformat(str(text)).astimezone(dt.UTC)
    except ValueError:
        return _e(text)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _who(actor: Mapping[str, Any] | None) -> str:
    if not actor or actor.get("kind") == "unrecorded":
        return '<span class="muted">not recorded</span>'
    kind = {"key": "API key", "cli": "command-line user", "python": "program"}.get(str(actor.get("kind")),
                                                                                    str(actor.get("kind")))
    name = f' &ldquo;{_e(actor["name"])}&rdquo;' if actor.get("name") else ""
    return f"{_e(kind)} <code>{_e(actor.get('id'))}</code>{name}"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "") -> str:
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return '<p class="muted">None in this period.</p>'
    th = "".join(f"<th>{h}</th>" for h in head)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


_STATUS_WORDS = {
    "intact": ("ok", "The record verifies", "Every entry is chained to the one before it and signed with the "
                                            "service's signing key: none was changed, removed or inserted "
                                            "since it was written."),
    "empty": ("warn", "The record is empty", "The log has no entries. A log that was emptied or deleted and "
                                            "started anew looks the same: only a checkpoint kept elsewhere "
                                            "tells."),
    "missing": ("warn", "There is no record", "No signed log was found, so nothing below can be proven."),
    "unproven": ("warn", "The record is not fully proven", "The chain holds, but its last entries are not "
                                                           "covered by a signature that could be checked."),
}


def _verification_box(report: Mapping[str, Any]) -> str:
    log = report["log"]
    v = log["verification"]
    kind, title, words = _STATUS_WORDS.get(str(v["status"]), (
        "bad", "THE RECORD FAILS VERIFICATION",
        "The log does not verify: it was changed after it was written, by someone without the signing key, "
        "or parts of it were removed. The numbers on this page are read from it and prove nothing."))
    parts = [f'<h2>The record</h2><div class="box {kind}"><h3 class="boxtitle">{_e(title)}</h3><p>{_e(words)}</p>']
    if not v["ok"] and v.get("problem"):
        parts.append(f'<p><b>What failed:</b> {_e(v["problem"])}</p>')
    if not v["ok"] and log["unproven_entries_in_period"]:
        parts.append(f"<p><b>{_plural(log['unproven_entries_in_period'], 'entry', 'entries')} of this period "
                     f"cannot be trusted.</b></p>")
    read = "Entries in the log" if v["ok"] else "Entries verified before the failure"
    facts = [("Status", _e(v["status"])), (read, _n(v["entries"])),
             ("Entries in this period", _n(log["entries_in_period"])
              + (f" (seq {log['first_seq']}&ndash;{log['last_seq']})" if log["first_seq"] is not None else "")),
             ("Signatures checked with public key", f"<code>{_e(log['public_key'] or 'none found')}</code>")]
    if v.get("head_seq") is not None:
        facts.append(("Latest entry", f"seq {v['head_seq']}, hash <code>{_e(v['head_hash'])}</code>"))
    cp = log.get("checkpoint")
    if cp is None:
        facts.append(("Signed checkpoint", '<span class="muted">none given: a checkpoint kept outside this '
                                           'service (<code>facelens log checkpoint</code>) would prove that '
                                           'no entry up to it was later cut or replaced</span>'))
    else:
        state = ("matches the log" if cp["log_matches"] else
                 "its signature is valid but the log no longer matches it" if cp["signature_valid"] else
                 "NOT signed by the log's key: ignored")
        facts.append(("Signed checkpoint", f"entry {cp['seq']} at {_when(cp['time'])} ({_e(cp['source'])}): "
                                           f"{_e(state)}; {'covers' if cp['covers_period'] else 'does not cover'} "
                                           f"the whole period"))
    for note in v.get("notes") or []:
        facts.append(("Note", _e(note)))
    parts.append(_table(["", ""], [[f"<b>{k}</b>", val] for k, val in facts], cls="kv"))
    parts.append("</div>")
    return "".join(parts)


def _banner(report: Mapping[str, Any]) -> str:
    """A warning at the top of the page when the record does not verify (the details follow below)."""
    v = report["log"]["verification"]
    if v["ok"]:
        return ""
    kind, title, _ = _STATUS_WORDS.get(str(v["status"]), ("bad", "THE RECORD FAILS VERIFICATION", ""))
    return (f'<div class="box {kind}"><b>{_e(title)}:</b> the numbers below are read from a record that cannot be '
            f"shown to be complete and unchanged (see &ldquo;The record&rdquo;).</div>")


def _headline(report: Mapping[str, Any]) -> str:
    t = report["totals"]
    period = report["period"]
    since = _when(period["since"]) if period["since"] else "the start of the record"
    lines = [
        f"{_plural(t['searches'], 'search', 'searches')} of {_plural(t['collections'], 'collection')}: "
        f"{t['identify']:,} identifications and {t['investigate']:,} investigations"
        + (f"; {t['searches_failed']:,} failed (of them {t['no_face']:,} had no face in the photo)"
           if t["searches_failed"] else "") + ".",
        f"Identifications returned {_plural(t['matches'], 'match', 'matches')}; investigations returned "
        f"{_plural(t['candidates'], 'candidate')} (leads for a person to review).",
        f"Of the candidates, reviewers confirmed {t['reviews_confirmed']:,} and rejected {t['reviews_rejected']:,}; "
        f"{t['reviews_expired']:,} expired unreviewed, {t['reviews_withdrawn']:,} "
        f"{'was' if t['reviews_withdrawn'] == 1 else 'were'} withdrawn by an erasure, and {t['reviews_pending']:,} "
        f"{'is' if t['reviews_pending'] == 1 else 'are'} still waiting for review.",
        f"{_plural(t['faces_enrolled'], 'face')} enrolled from {_plural(t['images_enrolled'], 'photo')}; "
        f"{_plural(t['faces_erased'], 'face')} erased ({_plural(t['persons_erased'], 'person')} erased "
        f"entirely), with {_plural(t['erasure_receipts'], 'erasure receipt')}.",
        (f"{_plural(t['searches_without_purpose'], 'search', 'searches')} stated no purpose. "
         if t["searches_without_purpose"] else "Every search stated a purpose. ") +
        f"{_plural(t['compares'], 'one-to-one comparison')}; {_plural(t['policy_changes'], 'policy change')}, "
        f"{_plural(t['lead_floor_changes'], 'lead-floor change')}; {_plural(t['keys_created'], 'API key')} "
        f"created, {t['keys_revoked']:,} revoked.",
    ]
    nums = [("searches", t["searches"]), ("candidates shown", t["candidates"]),
            ("confirmed by a reviewer", t["reviews_confirmed"]), ("awaiting review", t["reviews_pending"]),
            ("faces erased", t["faces_erased"])]
    cards = "".join(f'<div class="card"><div class="big">{v:,}</div><div>{_e(k)}</div></div>' for k, v in nums)
    return (f"<h2>In this period</h2><p class=\"muted\">From {since} to {_when(period['until'])} "
            f"(the end not included).</p><div class=\"cards\">{cards}</div>"
            + "<ul class=\"headline\">" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>")


_GLOSSARY = [
    ("Search", "A photo of a face compared against every face stored in a collection."),
    ("Identification", "A search in <i>identify</i> mode: it returns only <b>matches</b>, faces scoring above a "
                       "strict threshold chosen so that a search for someone who is not in the collection "
                       "returns anyone at most rarely (its FPIR, below)."),
    ("Investigation", "A search in <i>investigate</i> mode: it returns a short ranked list of <b>candidates</b>. "
                      "A candidate is a <b>lead</b>, never an identification: it may well be a stranger who "
                      "looks alike. Each is labelled with how many strangers would be expected to score as high "
                      "among the faces searched."),
    ("Review", "A person other than the one who searched looks at each candidate and <b>confirms</b> or "
               "<b>rejects</b> it, giving a reason; the decision is final and recorded. A candidate nobody "
               "reviews within the collection's retention period <b>expires</b> and is deleted; one whose "
               "face is erased meanwhile is <b>withdrawn</b>."),
    ("Purpose", "What the searcher wrote as the reason for the search (a case reference, for example). It is "
                "shown here exactly as written."),
    ("False-match rate (FMR)", "How often two photos of <i>different</i> people score at least a given "
                               "threshold, measured on many pairs of strangers' photos (the calibration). "
                               "The figure shown is a 95% upper confidence bound."),
    ("FPIR", "False-positive identification rate: how often a search for someone who is not in the collection "
             "returns anyone at all. It grows with the number of faces searched, so the threshold does too."),
    ("Measured / extrapolated / unsupported", "A rate is <i>measured</i> when at least 10 pairs of strangers in "
                                              "the calibration scored that high, <i>extrapolated</i> from a "
                                              "fitted tail when fewer did (within the range the data supports), "
                                              "and <i>unsupported</i> when the data for that group is too small "
                                              "to say anything at that rate."),
    ("Erasure receipt", "The proof given to a person who asked to be erased: what was removed, when and by "
                        "whom; its id appears in the record."),
]


def _glossary() -> str:
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in _GLOSSARY)
    return f'<h2>What the words mean</h2><dl class="gloss">{rows}</dl>'


def _purpose_cell(purpose: Any) -> str:
    return '<span class="muted">none stated</span>' if purpose is None else f"<q>{_e(purpose)}</q>"


def _point_words(p: Mapping[str, Any], a: Mapping[str, Any]) -> str:
    """One operating point's audited rates in words: how often strangers reach its threshold, overall and
    in the worst group, and how many a search of that many faces would be expected to return."""
    overall = a["overall"]
    what = "returned as a match" if p["mode"] == "identify" else "listed as a candidate"
    words = (f"At score {p['threshold']:.4f} ({_e(p['mode'])}), two photos of different people score this high "
             f"{_one_in(overall['fmr'])} times overall ({_e(overall['status'])})")
    if a["worst_group"]:
        words += (f", and {_one_in(a['worst_group_fmr'])} times in the worst audited group, "
                  f"<b>{_e(a['worst_group'])}</b> ({a['worst_group_ratio']:.2g}&times; as often)")
    size = p.get("collection_size")
    if size and overall["fmr"]:
        rate = a["worst_group_fmr"] or overall["fmr"]
        whose = "the worst group's" if a["worst_group_fmr"] else "the overall"
        words += (f". A search of {size['max']:,} faces for someone who is not among them would have about "
                  f"{size['max'] * rate:.2g} strangers {what}, at {whose} rate")
    unsupported = a.get("groups_unsupported") or []
    if unsupported:
        words += (". Too few pairs to say anything at this rate for: "
                  + ", ".join(f"<b>{_e(g)}</b>" for g in unsupported))
    return words + "."


def _points_section(c: Mapping[str, Any]) -> str:
    points = c["operating_points"]
    if not points:
        return ""
    rows = []
    for p in points:
        rate = (f"FPIR {_rate(p['max_fpir'])}, so FMR {_rate(p['max_fmr'])} per comparison"
                if p.get("max_fpir") is not None else f"FMR {_rate(p['max_fmr'])} per comparison")
        if p["mode"] == "investigate":
            rate = f"lead floor: {rate}"
        size = p.get("collection_size")
        sizes = "" if not size else (f"{size['min']:,}" if size["min"] == size["max"]
                                     else f"{size['min']:,}&ndash;{size['max']:,}")
        a = p.get("audited")
        if a is None:
            audited = '<span class="muted">calibration profile not available here</span>'
        else:
            worst = (f"worst group <b>{_e(a['worst_group'])}</b>: {_rate(a['worst_group_fmr'])}, "
                     f"{a['worst_group_ratio']:.2g}&times; the overall rate" if a["worst_group"] else "no group")
            audited = f"overall {_rate(a['overall']['fmr'])} ({_e(a['overall']['status'])}); {worst}"
        rows.append([_e(p["mode"]), rate, f"{p['threshold']:.4f}" if isinstance(p["threshold"], float) else
                     _e(p["threshold"]), sizes, _n(p["searches"]), audited])
    out = ["<h4>Operating points used</h4>",
           '<p class="plain">The operating point is the rule a search ran under: the score a face had to reach '
           "to be returned, derived from a target false-match rate. The audited rate is the share of pairs of "
           "photos of two different people, in the calibration data, that score at least that high: overall, "
           "and in each audited group of people. Groups are named by data set and label: "
           "<code>lfw:sex=F</code> is pairs of women in the LFW photos, <code>set:congress-historical</code> "
           "pairs of official portraits of former members of the US Congress.</p>",
           _table(["Mode", "Target rate", "Score threshold", "Faces searched", "Searches",
                   "Audited false-match rate at this threshold"], rows)]
    for p in points:
        a = p.get("audited")
        if a is None:
            continue
        out.append(f'<p class="plain">{_point_words(p, a)}</p>')
        grows = [[("<b>overall</b>" if g is a["overall"] else _e(g["name"])), _n(g["impostor_pairs"]),
                  '<span class="muted">too few pairs to say</span>' if g["status"] == "unsupported" else
                  _rate(g["fmr"]) + (f' <span class="muted">({_one_in(g["fmr"])})</span>' if g["fmr"] else ""),
                  "&ndash;" if g["status"] == "unsupported" else _rate(g["fmr_estimate"]),
                  f'<span class="st {_e(g["status"])}">{_e(g["status"])}</span>',
                  "yes" if g["used_by_worst_group"] else "no (too few pairs)"]
                 for g in [a["overall"], *a["groups"]]]
        out.append(f'<details open><summary>Per-group false-match rates at score {p["threshold"]:.4f} '
                   f'({_e(p["mode"])}, calibration <code>{_e(a["calibration"])}</code>, '
                   f'{_plural(a["impostor_pairs"], "pair")} of strangers)</summary>'
                   + _table(["Group", "Pairs of strangers", "FMR (95% upper bound)", "FMR (estimate)", "Status",
                             "Sets thresholds"], grows) + "</details>")
    return "".join(out)


def _collection_section(c: Mapping[str, Any]) -> str:
    s, cand, m, r = c["searches"], c["candidates"], c["matches"], c["reviews"]
    en, er = c["enrolments"], c["erasures"]
    gone = "" if c["exists_now"] else ' <span class="badge muted">no longer exists</span>'
    out = [f'<section class="coll"><h3>Collection <code>{_e(c["name"])}</code>{gone}</h3>']
    summary = [
        ["Searches", f"{s['total']:,} ({s['identify']:,} identify, {s['investigate']:,} investigate)"],
        ["Failed searches", f"{s['failed']:,}" + (f" ({s['no_face']:,} with no face in the photo"
                                                  + "".join(f", {n:,} {_e(k)}" for k, n in s['failed_by_code'].items()
                                                            if k != "no_face") + ")" if s["failed"] else "")],
        ["Matches returned (identify)", f"{m['total']:,} in {m['identifications']:,} identifications "
                                        f"({m['searches_with_a_match']:,} found a match)"],
        ["Candidates returned (investigate)",
         f"{cand['total']:,} in {cand['investigations']:,} investigations"
         + (f" (at most {cand['max']:,} in one, {cand['mean']:.1f} on average)" if cand["investigations"] else "")],
        ["Review items", f"{r['created']:,} created; {r['confirmed']:,} confirmed, {r['rejected']:,} rejected, "
                         f"{r['expired']:,} expired, {r['withdrawn']:,} withdrawn"
                         + (f", {r['deleted_with_collection']:,} deleted with the collection"
                            if r["deleted_with_collection"] else "") + f"; <b>{r['pending']:,} pending</b>"],
        ["Enrolments", f"{en['faces']:,} faces from {en['images']:,} photos ({en['faces_refused']:,} faces refused; "
                       f"{en['already_indexed']:,} photos already enrolled)"],
        ["Erasures", f"{_plural(er['faces'], 'face')} ({er['faces_deleted']:,} deleted in "
                     f"{_plural(er['face_deletions'], 'request')}; {_plural(er['persons_erased'], 'person')} erased "
                     f"with {_plural(er['person_faces_erased'], 'face')}); {_plural(len(er['receipts']), 'receipt')}"],
    ]
    out.append(_table(["", ""], [[f"<b>{k}</b>", v] for k, v in summary], cls="kv"))
    out.append('<div class="cols"><div>')
    out.append("<h4>Searches by purpose</h4>" + _table(
        ["Purpose", "Searches"], [[_purpose_cell(p["purpose"]), _n(p["count"])] for p in s["by_purpose"]]))
    out.append("</div><div>")
    out.append("<h4>Searches by who ran them</h4>" + _table(
        ["Searcher", "Searches"], [[_who(a["actor"]), _n(a["count"])] for a in s["by_actor"]]))
    out.append("</div></div>")
    if cand["per_search"]:
        out.append("<h4>Candidates per investigation</h4>" + _table(
            ["Candidates returned", "Investigations"],
            [[_n(d["returned"]), _n(d["searches"])] for d in cand["per_search"]]))
    out.append(_points_section(c))
    changes = [[_when(p["time"]), _who(p["actor"]), "; ".join(
        f"<code>{_e(k)}</code>: {_e(json.dumps(v['before']))} &rarr; {_e(json.dumps(v['after']))}"
        for k, v in p["changes"].items()) or '<span class="muted">no field changed</span>']
        for p in c["policy_changes"]]
    changes += [[_when(p["time"]), _who(p["actor"]),
                 f"<code>lead_floor_fmr</code>: {_rate(p['before'])} &rarr; {_rate(p['after'])}"]
                for p in c["lead_floor_changes"]]
    if changes:
        out.append("<h4>Rule changes</h4>" + _table(["When", "By", "What changed"], sorted(changes)))
    if c["lifecycle"]:
        out.append("<h4>Created and deleted</h4>" + _table(["When", "What", "By"], [
            [_when(x["time"]), _e(x["action"].replace("_", " ")), _who(x["actor"])] for x in c["lifecycle"]]))
    if er["receipts"]:
        out.append("<details><summary>Erasure receipts</summary>" + _table(
            ["Receipt", "When", "What", "Faces", "Log entry"],
            [[f"<code>{_e(x['receipt_id'])}</code>", _when(x["time"]), _e(str(x["action"]).replace("_", " ")),
              _n(x["faces"]), _n(x["seq"])] for x in er["receipts"]]) + "</details>")
    out.append("</section>")
    return "".join(out)


def _compares_section(report: Mapping[str, Any]) -> str:
    cmp = report["compares"]
    if not cmp["total"]:
        return ""
    return ("<h2>One-to-one comparisons</h2><p>Two photos compared with each other (no collection searched): "
            f"{cmp['total']:,}, of which {cmp['matches']:,} matched and {cmp['failed']:,} failed.</p>"
            '<div class="cols"><div>' + _table(["Purpose", "Comparisons"], [
                [_purpose_cell(p["purpose"]), _n(p["count"])] for p in cmp["by_purpose"]]) + "</div><div>"
            + _table(["By", "Comparisons"], [[_who(a["actor"]), _n(a["count"])] for a in cmp["by_actor"]])
            + "</div></div>")


def _keys_section(report: Mapping[str, Any]) -> str:
    keys = report["keys"]
    if not keys["created"] and not keys["revoked"]:
        return ""
    rows = [[_when(k["time"]), "created", f"<code>{_e(k['key_id'])}</code> &ldquo;{_e(k['name'])}&rdquo;",
             "global admin" if k.get("admin") else ", ".join(f"<code>{_e(x)}</code>" for x in k["collections"])
             or "none", _who(k["actor"])] for k in keys["created"]]
    rows += [[_when(k["time"]), "revoked", f"<code>{_e(k['key_id'])}</code> &ldquo;{_e(k['name'])}&rdquo;", "",
              _who(k["actor"])] for k in keys["revoked"]]
    return ("<h2>API keys</h2><p>Who may search: keys given to people or systems, and taken back.</p>"
            + _table(["When", "Event", "Key", "Collections", "By"], sorted(rows)))


def _about(report: Mapping[str, Any]) -> str:
    return ("<h2>About this report</h2><p>Every number on this page is counted from the service's signed "
            "log, the record it writes of every search, enrolment, erasure, review decision and rule change "
            "before it answers. Each entry is chained to the one before it and signed, so that a change made "
            "afterwards, by anyone without the signing key, shows in the verification above. The false-match "
            "rates come from the calibration profile each search used: pairs of photos of different people, "
            "grouped by the coarse demographic labels of the data sets they come from (labels made by "
            "others, some wrong); per-group rates show how the model behaves on that data, not a verdict on "
            "any group. The record holds no photos and no face data, and this page names no person who was "
            "searched for or found.</p>"
            f'<p class="muted">Generated {_when(report["generated"])} by facelens {_e(report["facelens_version"])} '
            f"(report format {_e(report['version'])}); the same numbers are in <code>transparency.json</code>.</p>")


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1a1a1a;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.6em}h4{margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.35em .6em;
vertical-align:top;text-align:left}th{background:#f4f4f4}table.kv thead{display:none}
.muted{color:#666}.badge{display:inline-block;padding:0 .45em;border-radius:.6em;font-size:.78em;font-weight:600}
.badge.muted{background:#eef;color:#335;border:1px solid #ccd}
.box{border:2px solid;border-radius:6px;padding:.4em 1em;margin:1em 0}.box .boxtitle{margin:.3em 0}
.box.ok{border-color:#3a7d44;background:#f1f8f2}.box.warn{border-color:#b7791f;background:#fdf8ec}
.box.bad{border-color:#9b1c1c;background:#fde8e8}.box.bad .boxtitle,.box.bad p b{color:#9b1c1c}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:1em 0}.card{border:1px solid #ccc;border-radius:6px;
padding:.5em 1em;min-width:9em;background:#fafafa}.card .big{font-size:1.8em;font-weight:700}
ul.headline li{margin:.25em 0}dl.gloss{display:grid;grid-template-columns:minmax(10em,16em) 1fr;gap:.35em 1.2em}
dl.gloss dt{font-weight:600}dl.gloss dd{margin:0;max-width:52em}
section.coll{margin-top:1.5em}section.coll h3{background:#f4f4f4;padding:.3em .5em}
.plain{color:#333;max-width:60em}.cols{display:flex;flex-wrap:wrap;gap:2em}
.cols>div{flex:1 1 24em}q{quotes:"\\201C" "\\201D"}code{font-size:.9em;overflow-wrap:anywhere}
details{margin:.4em 0}summary{cursor:pointer;color:#234}
.st{font-weight:600}.st.measured{color:#2f6b38}.st.extrapolated{color:#8a5a00}.st.unsupported{color:#9b1c1c}
"""


def render_transparency_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page: no script, no external stylesheet, font or image; every
    text from the log (purposes, key names, user names) escaped."""
    period = report["period"]
    title = (f"Transparency report: {_when(period['since']) if period['since'] else 'start of record'} to "
             f"{_when(period['until'])}")
    body = [f"<h1>{_e(title)}</h1>",
            '<p class="muted">What this face recognition service did in the period: who searched, for what '
            "stated purpose, what they were shown, what reviewers decided, and what was enrolled and erased. "
            "Counted from its signed record.</p>",
            _banner(report), _headline(report), _verification_box(report), _glossary(), "<h2>Collections</h2>"]
    if not report["collections"]:
        body.append('<p class="muted">No collection was used in this period.</p>')
    body += [_collection_section(c) for c in report["collections"]]
    body += [_compares_section(report), _keys_section(report)]
    if report.get("other_actions"):
        body.append("<h2>Other recorded actions</h2>" + _table(
            ["Action", "Count"], [[_e(k), _n(v)] for k, v in report["other_actions"].items()]))
    body.append(_about(report))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")
