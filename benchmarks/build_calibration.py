"""Measure the calibration profile that facelens ships, from the real faces of ../shared/data.

    nice -n 10 python benchmarks/build_calibration.py --model buffalo_s

Embeds (or reads from the audit's embedding cache in the facelens home) every image of LFW (13,233),
congress-past (400: 200 members x 2) and congress-historical (3,000 members, one portrait each), the
largest face of each, and scores every pair of images of different people (about 138 million pairs):
within each set and across sets. Writes facelens/calibration/data/<model>.npz (format 3): the overall
impostor curve with its fitted generalised Pareto tail and bootstrap draws, one curve per set
(``set:<name>``: pairs within it) and one per LFW sex and race label (both images in the group).

Rules, stated:
- one person, one label across sets: the listed overlaps (congress-past/lfw_name_overlap.csv,
  benchmarks/data/congress_lfw_overlap_extra.csv) and any LFW identity whose first and last names are a
  member's given name (or nickname) and surname are the same person (benchmarks/calib_data.py);
- within LFW, impostor pairs between the identity pairs of benchmarks/data/lfw_label_errors.csv are set
  aside (reviewed by eye: one person or one photo under two names);
- pairs of different labels scoring >= 0.9 are set aside as the same photo (as the audit does);
- cross-set pairs scoring at or above ``s_cross`` are set aside as probably the same person under
  names the rule above did not match: ``s_cross`` is the score at which the within-set curve's upper
  bound expects fewer than 0.01 impostor pairs among all the cross-set pairs (at most 0.9), so that a
  cross pair scoring that high is far likelier one person than two strangers;
- LFW's subject is the face nearest the image centre: LFW images in an impostor pair scoring >= 0.45 are
  analysed again and given their central face (calib_data.lfw_central_faces);
- UTKFace is not used: it has no identity labels, holds same-person and near-duplicate pairs and public
  figures found in the other sets, so its pairs are not known to be impostor pairs (the audit reports
  its false-match rates separately).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facelens  # noqa: E402
from benchmarks.calib_data import ROOT, pool  # noqa: E402
from facelens.calibration.table import N_BINS, ImpostorCurve, ScoreCalibration, score_bins  # noqa: E402

DUPLICATE = 0.9
CROSS_EXPECTED = 0.01


Hists = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], int, list[tuple[int, int, float]]]


def histograms(emb: np.ndarray, labels: np.ndarray, sets: np.ndarray, masks: dict[str, np.ndarray],
               chunk: int = 512) -> Hists:
    """(within-set impostor histogram, cross-set impostor histogram, histogram per mask (both rows in it),
    within-set pairs >= DUPLICATE set aside, the cross-set pairs scoring >= 0.5 as (i, j, score))."""
    _, codes = np.unique(labels, return_inverse=True)
    _, set_codes = np.unique(sets, return_inverse=True)
    n = len(emb)
    within = np.zeros(N_BINS, np.int64)
    cross = np.zeros(N_BINS, np.int64)
    per = {k: np.zeros(N_BINS, np.int64) for k in masks}
    dups = 0
    high: list[tuple[int, int, float]] = []
    t = time.time()
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        s = emb[start:stop] @ emb[start + 1:].T
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(start + 1, n)[None, :]
        imp = (cols > rows) & (codes[start:stop, None] != codes[None, start + 1:])
        same_set = set_codes[start:stop, None] == set_codes[None, start + 1:]
        dup = imp & (s >= DUPLICATE)
        dups += int((dup & same_set).sum())
        keep = imp & ~(dup & same_set)
        b = score_bins(s)
        within += np.bincount(b[keep & same_set], minlength=N_BINS)
        cross += np.bincount(b[keep & ~same_set], minlength=N_BINS)
        hi = np.argwhere(keep & ~same_set & (s >= 0.5))
        high += [(start + int(r), start + 1 + int(c), float(s[r, c])) for r, c in hi]
        for k, m in masks.items():
            both = keep & m[start:stop, None] & m[None, start + 1:]
            per[k] += np.bincount(b[both], minlength=N_BINS)
        if (start // chunk) % 8 == 0:
            print(f"# pairs: rows {stop:,} of {n:,} ({time.time() - t:.0f} s)", file=sys.stderr)
    return within, cross, per, dups, high


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="buffalo_s")
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write the profile (default: facelens/calibration/data/<model>.npz)")
    args = ap.parse_args()
    engine = facelens.Engine(model=args.model, threads=1)
    p = pool(engine)
    masks: dict[str, np.ndarray] = {}
    for name in ("lfw", "congress-past", "congress-historical"):
        masks[f"set:{name}"] = p.sets == name
    for column in ("sex", "race"):
        for value in sorted(set(p.groups[column].tolist()) - {"", "multiple"}):
            masks[f"lfw:{column}={value}"] = p.groups[column] == value
    within, cross, per, dups, high = histograms(p.embeddings, p.labels, p.sets, masks)
    # the cross-set limit: where the within-set curve's upper bound expects < CROSS_EXPECTED pairs among them
    curve = ImpostorCurve("within", within)
    n_cross = int(cross.sum())
    target = CROSS_EXPECTED / n_cross
    try:
        s_cross = min(curve.threshold(max(target, curve.supported_floor))[0], DUPLICATE)
    except facelens.CalibrationError:  # the bound never gets that low: only the same-photo rule applies
        s_cross = DUPLICATE
    cut = int(score_bins(s_cross))
    cross_aside = int(cross[cut:].sum())
    cross[cut:] = 0
    aside_pairs = sorted(((i, j, sc) for i, j, sc in high if sc >= s_cross), key=lambda x: -x[2])
    total = within + cross
    groups = {k: v for k, v in per.items() if v.sum() >= 1000}
    left_out = {k: int(v.sum()) for k, v in per.items() if v.sum() < 1000}
    meta = {
        "dataset": "LFW (13,233) + congress-past (400) + congress-historical (3,000), largest face of each image; "
                   "every pair of images of different people, within and across sets",
        "images": int(len(p.labels)),
        "people": int(len(set(p.labels.tolist()))),
        "impostor_pairs_within_sets": int(within.sum()),
        "impostor_pairs_across_sets": int(cross.sum()),
        "groups_source": "set:<name> = pairs within a set; lfw:sex/race from LFW's labels (sex_afifi, race_mica), "
                         "both images in the group",
        "set_aside": {
            "rule": "one label per person across sets (listed overlaps + first/last name match: "
                    f"{len(p.unified)} LFW identities); LFW label-error identity pairs share a label; within-set "
                    f"pairs of different labels >= {DUPLICATE} (same photo); cross-set pairs >= s_cross, where "
                    f"the within-set upper bound expects < {CROSS_EXPECTED} impostor pairs among the cross pairs",
            "within_set_duplicates": dups, "s_cross": round(s_cross, 4), "cross_set_pairs_set_aside": cross_aside,
            "identities_unified": len(p.unified)},
        "utkface": "not used: no identity labels (same-person and near-duplicate pairs among its 'impostors')",
        "face_choice": "the largest face of each image",
        "facelens_version": facelens.__version__,
        "measured_on": dt.date.today().isoformat(),
        "command": f"python benchmarks/build_calibration.py --model {args.model}",
        "caveat": "Demographic labels are coarse annotations made by others. LFW is news photos of mostly adult, "
                  "mostly male, mostly white public figures, and the congress sets are official portraits of "
                  "mostly older white men: audit your own population (facelens audit) and calibrate on it "
                  "(facelens calibrate) before trusting these rates for other people.",
    }
    t = time.time()
    cal = ScoreCalibration(name=f"pooled-{Path(args.model).name}", model_sha256=engine.model_sha256, counts=total,
                           meta=meta, groups=groups)
    if left_out:
        cal.meta["groups_left_out"] = {"min_pairs": 1000, "pairs": left_out}
    print(f"# tail fits and bootstrap: {time.time() - t:.0f} s", file=sys.stderr)
    out = args.out or ROOT / "facelens" / "calibration" / "data" / f"{Path(args.model).name}.npz"
    cal.save(out)
    print(f"{out}: {cal.n_pairs:,} impostor pairs ({int(within.sum()):,} within sets, {int(cross.sum()):,} across); "
          f"{dups} same-photo pairs and {cross_aside} cross-set pairs >= s_cross {s_cross:.4f} set aside; "
          f"{len(p.unified)} LFW identities unified with members")
    for label, ident, why in p.unified:
        print(f"  unified: {label} = lfw:{ident} ({why})")
    for i, j, sc in aside_pairs[:40]:
        print(f"  cross pair set aside: {sc:.3f} {p.labels[i]} {Path(p.paths[i]).name} ~ {p.labels[j]} "
              f"{Path(p.paths[j]).name}")
    print(f"  overall: {cal.overall.summary()}")
    for rate in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 3e-9, 1e-9):
        try:
            worst = cal.threshold_detail(rate)
        except facelens.CalibrationError as exc:
            print(f"  max FMR {rate:g}: refused ({exc})")
            continue
        parts = []
        for c in [cal.overall, *cal.curves.values()]:
            if c.supports(rate):
                thr, ex = c.threshold(rate)
                parts.append(f"{c.name} {thr:.4f}{'*' if ex else ''}")
        print(f"  max FMR {rate:g}: worst-group {worst[0]:.4f} ({worst[2]}{', extrapolated' if worst[1] else ''}); "
              + ", ".join(parts))
    for g, c in cal.curves.items():
        tail = c.tail.summary() if c.tail else None
        print(f"  {g}: {c.n_pairs:,} pairs, supported down to {c.supported_floor:.1e}, tail {tail}")


if __name__ == "__main__":
    main()
