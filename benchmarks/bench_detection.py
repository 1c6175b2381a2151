"""Detection rate on tightly cropped faces (UTKFace chips) and official portraits (congress-past).

    python benchmarks/bench_detection.py [--data ../shared/data] [--step 5]

UTKFace's 200x200 chips are faces cropped to fill the frame, the case a plain 640 letterbox misses.
Three detector set-ups are run on every image:
- "plain letterbox 640": the image enlarged to 640, no fallback (what InsightFace's FaceAnalysis does);
- "plain letterbox 640 on 800x800": the chip enlarged to 800x800 first (an ID photo at camera
  resolution), no fallback;
- "facelens default" and "facelens default on 800x800": facelens' detect as shipped (small images at their
  own size, and a retry on a padded canvas when nothing is found).
Writes benchmarks/results/detection.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facelens  # noqa: E402
from benchmarks.common import ROOT  # noqa: E402
from facelens.imageio import decode_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--step", type=int, default=1, help="use every STEP-th image of each set")
    args = ap.parse_args()
    engine = facelens.Engine(threads=args.threads)
    assert engine.backend is not None
    detector = engine.backend.detector
    cfg = engine.config
    sets = {"UTKFace chips (200x200)": sorted((args.data / "utkface-dev" / "images").glob("*.jpg"))[:: args.step],
            "congress-past portraits": sorted((args.data / "congress-past" / "images").glob("*.jpg"))[:: args.step]}
    results = {}
    for name, files in sets.items():
        found = {"plain letterbox 640": 0, "plain letterbox 640 on 800x800": 0, "facelens default": 0,
                 "facelens default on 800x800": 0}
        for f in tqdm(files, desc=name, unit="img"):
            rgb = decode_image(f)
            big = cv2.resize(rgb, (800, 800)) if "UTKFace" in name else rgb
            for label, img in (("plain letterbox 640", rgb), ("plain letterbox 640 on 800x800", big)):
                dets = detector.detect(img, input_size=640, score_threshold=cfg.det_threshold,
                                       nms_threshold=cfg.nms_threshold)
                found[label] += bool(dets)
            found["facelens default"] += bool(engine.detect(rgb))
            found["facelens default on 800x800"] += bool(engine.detect(big))
        results[name] = {"images": len(files), "found": found}
    out = ROOT / "benchmarks" / "results" / "detection.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    labels = list(next(iter(results.values()))["found"])
    print("| images | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    for name, r in results.items():
        n = r["images"]
        print(f"| {name}, n={n} | " + " | ".join(f"{r['found'][k] / n * 100:.1f}%" for k in labels) + " |")


if __name__ == "__main__":
    main()
