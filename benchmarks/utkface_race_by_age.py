"""False-match rate within each UTKFace race label, adults and children apart, at one threshold.

    python benchmarks/embed_images.py ../shared/data/utkface-dev/images --name utkface
    python benchmarks/utkface_race_by_age.py [--threshold 0.3951]

UTKFace has no identity labels: every pair of different images counts as an impostor pair, except
pairs scoring >= 0.9 (set aside as the same photo, as `facelens audit` does). Separates the two things
the race breakdown of `facelens audit ../shared/data/utkface-dev` mixes: race and the share of
children in each race label.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import CACHE, ROOT  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threshold", type=float, default=0.3951, help="default: facelens's FMR 1e-5 worst-group")
    ap.add_argument("--labels", type=Path, default=ROOT.parent / "shared" / "data" / "utkface-dev" / "labels.csv")
    args = ap.parse_args()
    z = np.load(CACHE / "utkface_facelens_buffalo_s.npz")
    emb, files = z["embeddings"][z["found"]], z["files"][z["found"]]
    labels = {r["file"]: r for r in csv.DictReader(args.labels.open())}
    race = np.array([labels[f]["race"] for f in files])
    adult = np.array([int(labels[f]["age"]) >= 18 for f in files])
    scores = emb @ emb.T
    iu = np.triu_indices(len(emb), 1)
    s = scores[iu]
    keep = s < 0.9
    print("| race | adults (18+): images | pairs | false matches | FMR | children (0-17): images | pairs | "
          "false matches | FMR |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(set(race)):
        cells = []
        for mask in (adult, ~adult):
            m = (race == r) & mask
            pair = m[iu[0]] & m[iu[1]] & keep
            n, k = int(pair.sum()), int((s[pair] >= args.threshold).sum())
            cells.append(f"{int(m.sum())} | {n:,} | {k:,} | {k / max(n, 1):.1e}")
        print(f"| {r} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
