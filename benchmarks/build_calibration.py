"""Measure the impostor-score table that facelens ships, from cached LFW embeddings.

    python benchmarks/embed_lfw.py --model buffalo_s        # embeddings of all 13,233 LFW images
    python benchmarks/build_calibration.py --model buffalo_s

Scores every pair of images of different people (about 87 million pairs; images where no face was
found are left out and counted) and writes facelens/calibration/data/<model>.npz.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facelens  # noqa: E402
from benchmarks.common import CACHE, ROOT, identity  # noqa: E402
from facelens.calibration import ScoreCalibration, impostor_histogram  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="buffalo_s")
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write the table (default: facelens/calibration/data/<model>.npz)")
    args = ap.parse_args()
    key = Path(args.model).name  # "buffalo_s", "dlib", or a model folder's name
    z = np.load(CACHE / f"lfw_facelens_{key}.npz")
    paths, found = [str(p) for p in z["paths"]], z["found"]
    labels = np.array([identity(p) for p in paths])
    emb = z["embeddings"][found]
    imp, gen = impostor_histogram(emb, labels[found])
    meta = {
        "dataset": "LFW (deep-funneled), every image; all pairs of images of different people",
        "images": int(len(paths)),
        "images_without_face": int((~found).sum()),
        "identities": int(len(set(labels[found]))),
        "genuine_pairs": int(gen.sum()),
        "face_choice": "the detected face nearest the image centre",
        "facelens_version": facelens.__version__,
        "measured_on": dt.date.today().isoformat(),
        "command": f"python benchmarks/build_calibration.py --model {args.model}",
        "caveat": "LFW holds a few mislabelled and duplicated images; a pair of photos of the same person "
                  "filed under two names counts here as an impostor pair, which makes rates slightly pessimistic.",
    }
    cal = ScoreCalibration(name=f"lfw-impostors-{key}", model_sha256=str(z["model_sha256"]), counts=imp,
                           meta=meta)
    out = args.out or ROOT / "facelens" / "calibration" / "data" / f"{key}.npz"
    cal.save(out)
    print(f"{out}: {cal.n_pairs:,} impostor pairs, {meta['images_without_face']} images without a face")
    for rate in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
        print(f"  max FMR {rate:g}: threshold {cal.threshold(rate):.4f}")


if __name__ == "__main__":
    main()
