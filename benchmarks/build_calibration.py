"""Measure the calibration profile that facelens ships, from cached LFW embeddings.

    python benchmarks/embed_lfw.py --model buffalo_s        # embeddings of all 13,233 LFW images
    python benchmarks/build_calibration.py --model buffalo_s

Scores every pair of images of different people (about 87 million pairs) and writes
facelens/calibration/data/<model>.npz: the overall impostor curve and one per LFW demographic group
(sex, and race where LFW's labels give one value; both images of a pair in the group).

Set aside, by a stated rule: impostor pairs between the identity pairs listed in
benchmarks/data/lfw_label_errors.csv. That list was made by looking at the highest-scoring impostor
pair of every LFW identity pair with a pair scoring >= 0.45 under buffalo_s (43 identity pairs, 117
image pairs): the 26 listed are one person under two names, one photograph filed under two names, or
a group photo whose analysed face is the other named person. Twins and siblings (the Olsens, the
Mowrys, the Phelps, the Moraes, the Hentzens) and every pair that was not clearly the same person were
kept: they are false matches a deployment would make too.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facelens  # noqa: E402
from benchmarks.common import CACHE, DEFAULT_LFW, ROOT, identity  # noqa: E402
from facelens.audit.dataset import read_lfw  # noqa: E402
from facelens.calibration import build_calibration  # noqa: E402
from facelens.calibration.table import impostor_histogram  # noqa: E402

LABEL_ERRORS = ROOT / "benchmarks" / "data" / "lfw_label_errors.csv"


def merged_labels(labels: np.ndarray) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Identity labels in which each listed identity pair shares one label, so that pairs between them
    count neither as impostor pairs (they are set aside) nor as anything else the profile uses."""
    rows = list(csv.DictReader(LABEL_ERRORS.open()))
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for r in rows:
        a, b = find(r["identity_a"]), find(r["identity_b"])
        if a != b:
            parent[b] = a
    return np.array([find(str(x)) for x in labels]), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="buffalo_s")
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write the profile (default: facelens/calibration/data/<model>.npz)")
    args = ap.parse_args()
    key = Path(args.model).name  # "buffalo_s", "dlib", or a model folder's name
    z = np.load(CACHE / f"lfw_facelens_{key}.npz")
    paths, found = [str(p) for p in z["paths"]], z["found"]
    labels = np.array([identity(p) for p in paths])
    merged, errors = merged_labels(labels)
    emb = z["embeddings"][found]
    imp_raw, _ = impostor_histogram(emb, labels[found])

    lfw = read_lfw(args.lfw)
    row_of = {str(p.relative_to(args.lfw / "images")): i for i, p in enumerate(lfw.paths)}
    order = np.array([row_of[p] for p in paths])
    groups: dict[str, np.ndarray] = {}
    for column in ("sex", "race"):
        values = lfw.groups[column][order][found]
        for value in sorted(set(values.tolist()) - {"", "multiple"}):
            groups[f"lfw:{column}={value}"] = values == value
    meta = {
        "dataset": "LFW (deep-funneled), every image; all pairs of images of different people",
        "images": int(len(paths)),
        "images_without_face": int((~found).sum()),
        "identities": int(len(set(labels[found]))),
        "groups_source": "LFW labels (../shared/data/lfw/labels/lfw_images.csv): sex_afifi (manually verified "
                         "lists), race_mica (866 identities; several values = left out); both images in the group",
        "set_aside": {"rule": "impostor pairs between identity pairs listed in benchmarks/data/lfw_label_errors.csv "
                              "(reviewed by eye: same person under two names, same photo under two names, or a "
                              "group photo whose analysed face is the other person)",
                      "identity_pairs": len(errors)},
        "face_choice": "the detected face nearest the image centre",
        "facelens_version": facelens.__version__,
        "measured_on": dt.date.today().isoformat(),
        "command": f"python benchmarks/build_calibration.py --model {args.model}",
        "caveat": "Demographic labels are coarse annotations made by others. LFW is news photos of mostly adult, "
                  "mostly male, mostly white public figures: audit your own population (facelens audit) and "
                  "calibrate on it (facelens calibrate) before trusting these rates for other people.",
    }
    cal = build_calibration(emb, merged[found], name=f"lfw-{key}", model_sha256=str(z["model_sha256"]),
                            meta=meta, groups=groups)
    meta["set_aside"]["impostor_pairs"] = int(imp_raw.sum() - cal.n_pairs)
    cal.meta.update(meta)
    out = args.out or ROOT / "facelens" / "calibration" / "data" / f"{key}.npz"
    cal.save(out)
    print(f"{out}: {cal.n_pairs:,} impostor pairs ({meta['set_aside']['impostor_pairs']:,} set aside), "
          f"{meta['images_without_face']} images without a face")
    print(f"  overall tail: {cal.overall.summary()}")
    for rate in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9):
        thr = {c.name: c.threshold(rate) for c in [cal.overall, *cal.curves.values()]}
        worst = cal.threshold_detail(rate)
        print(f"  max FMR {rate:g}: worst-group {worst[0]:.4f} ({worst[2]}{', extrapolated' if worst[1] else ''}); "
              + ", ".join(f"{k} {v[0]:.4f}{'*' if v[1] else ''}" for k, v in thr.items()))
    for g, c in cal.curves.items():
        print(f"  {g}: {c.n_pairs:,} pairs, slope {c.tail_slope:.1f}{'' if c.tail_fitted else ' (overall)'}")


if __name__ == "__main__":
    main()
