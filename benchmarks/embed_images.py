"""Embed every image of a folder with facelens (largest face) and cache the result.

    python benchmarks/embed_images.py ../shared/data/utkface-dev/images --name utkface
    python benchmarks/embed_images.py ../shared/data/congress-past/images --name congress

Writes benchmarks/.cache/<name>_facelens_<model>.npz with, per image (sorted file names): embeddings
(n, d) float32 (zeros where no face), found, det_score, refusal (the AUTO quality refusal reasons,
';'-joined, '' when acceptable). Used by build_calibration.py and the audit benchmarks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facelens  # noqa: E402
from benchmarks.common import CACHE, save_npz_atomic  # noqa: E402
from facelens.quality import refusal_reasons  # noqa: E402
from facelens.types import QualityFilter  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--model", default="buffalo_s")
    args = ap.parse_args()
    files = sorted(p.name for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    engine = facelens.Engine(model=args.model, threads=1, quality_filter="NONE")
    n = len(files)
    emb = np.zeros((n, engine.embedding_size), np.float32)
    found = np.zeros(n, bool)
    score = np.zeros(n, np.float32)
    refusal = []
    for i, name in enumerate(tqdm(files, desc=args.name, unit="img")):
        faces = engine.analyze(str(args.folder / name))
        if not faces:
            refusal.append("no_face")
            continue
        f = max(faces, key=lambda x: x.bbox.area)
        emb[i], found[i], score[i] = f.embedding, True, f.score
        refusal.append(";".join(r.value for r in refusal_reasons(f.score, f.pose, f.quality, QualityFilter.AUTO)))
    out = CACHE / f"{args.name}_facelens_{Path(args.model).name}.npz"
    save_npz_atomic(out, files=np.array(files), embeddings=emb, found=found, det_score=score,
                    refusal=np.array(refusal), model_sha256=np.array(engine.model_sha256))
    print(f"{out}: {found.sum()}/{n} images with a face")


if __name__ == "__main__":
    main()
