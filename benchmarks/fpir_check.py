"""Honesty check: the FPIR the calibration predicts for the default search vs the FPIR measured on real
non-mated searches, at several gallery sizes; and what the default threshold finds of LFW's true mates.

    nice -n 10 python benchmarks/fpir_check.py [--points before.json]

Probes: every LFW person with exactly one photo (and not a member of Congress by the naming rule of
calib_data.py), so that none has a mate anywhere. Gallery: every other real face in ../shared/data
(LFW, congress-past, congress-historical, UTKFace-dev; largest face of each image), searched exactly
with numpy. A gallery face with the probe's label is left out (none by construction), and probe/gallery
pairs scoring >= 0.9 are set aside as the same photo. Gallery sizes 1,000 and 10,000 are random
subsets (seed 0), then the whole gallery.

Operating points: the default search (max FPIR 0.003) of the facelens on the path, or, with
``--points``, those printed by operating_points.py (e.g. by an older release: the "before" figures).
The second table: the default search threshold at 1e3 ... 1e7 faces and the share of LFW same-person
pairs (every pair of two photos of one LFW person) scoring at or above it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facelens  # noqa: E402
from benchmarks.calib_data import pool  # noqa: E402
from facelens.audit.metrics import fpir_check  # noqa: E402
from facelens.calibration.table import impostor_histogram, score_bins  # noqa: E402


def points_now(sizes: list[int]) -> dict:
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("operating_points.py")), "--sizes",
                          ",".join(map(str, sizes))], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=Path, default=None, help="operating_points.py JSON to use instead")
    ap.add_argument("--model", default="buffalo_s")
    args = ap.parse_args()
    engine = facelens.Engine(model=args.model, threads=1)
    p = pool(engine, ("lfw", "congress-past", "congress-historical", "utkface-dev"))
    labels = p.labels
    uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    single = (counts[inverse] == 1) & (p.sets == "lfw") & np.char.startswith(labels.astype(str), "lfw:")
    probes = np.nonzero(single)[0]
    n_gallery = len(labels) - 1  # every other face
    sizes = [1_000, 10_000, len(labels)]  # the last: the whole gallery (every face but the probe's own)
    mates_sizes = [1_000, 10_000, 100_000, 1_000_000, 10_000_000]
    pts = json.loads(args.points.read_text()) if args.points else points_now([1_000, 10_000, n_gallery] + mates_sizes)
    search = pts["search"]

    def op(n: int) -> tuple[float, float, bool]:
        key = str(n if n != len(labels) else n_gallery)
        s = search[key]
        return s["threshold"], s["max_fmr"], s["extrapolated"]

    est = {float(s["threshold"]): float(s["fmr_estimate"]) for s in search.values() if "threshold" in s}

    def estimate(score: float) -> float:
        return est[float(score)]

    # the gallery is every face but the probe itself: probe i's own row has its label, so it is left out
    check = fpir_check(p.embeddings[probes], p.embeddings, sizes, op, estimate, probe_labels=labels[probes],
                       gallery_labels=labels, max_fpir=0.003)
    print(f"calibration {pts['calibration']} (facelens {pts['facelens_version']}): {len(probes):,} non-mated "
          f"searches (LFW people with one photo) against {len(labels):,} real faces "
          f"({check.duplicates_set_aside} same-photo pairs set aside)")
    print("| gallery faces | threshold | max FMR | predicted FPIR | bound | measured FPIR (95% CI) | ratio "
          "| within 3x |")
    print("|---|---|---|---|---|---|---|---|")
    for pt in check.points:
        m = pt.measured
        ratio = f"{pt.ratio:.2f}" if pt.ratio else "-"
        print(f"| {pt.gallery_size:,} | {pt.threshold:.4f}{' (extrapolated)' if pt.extrapolated else ''} | "
              f"{pt.max_fmr:.2e} | {pt.predicted_fpir:.2e} | {pt.bound_fpir:.2e} | {m.k} of {m.n:,} = "
              f"{m.k / m.n:.2e} ({m.ci_low:.1e} to {m.ci_high:.1e}) | {ratio} | {'yes' if pt.consistent else 'NO'} |")
    # LFW same-person pairs found at the default threshold, by collection size
    lfw = p.sets == "lfw"
    _, genuine = impostor_histogram(p.embeddings[lfw], labels[lfw])
    at_least = np.cumsum(genuine[::-1])[::-1]
    print(f"\nLFW same-person pairs: {int(genuine.sum()):,}")
    print("| faces | threshold | extrapolated | set by | LFW same-person pairs at or above |")
    print("|---|---|---|---|---|")
    for n in mates_sizes:
        s = search.get(str(n))
        if s is None or "threshold" not in s:
            print(f"| {n:,} | refused | | | {s['refused'] if s else ''} |")
            continue
        found = int(at_least[int(score_bins(s["threshold"]))])
        print(f"| {n:,} | {s['threshold']:.4f} | {s['extrapolated']} | {s['limited_by']} | "
              f"{found / genuine.sum():.1%} |")


if __name__ == "__main__":
    main()
