"""Embed every LFW image with facelens and cache the result (used by calibration and bench_lfw.py).

    python benchmarks/embed_lfw.py [--lfw ../shared/data/lfw] [--model buffalo_s] [--threads 1]

Writes benchmarks/.cache/lfw_facelens_<model>.npz with, per image (sorted relative paths):
embeddings (n, d) float32 (zeros where no face), found, n_faces, seconds (decode+detect+embed), and
the pose/quality of the chosen face. When an image holds several faces, the one nearest the image
centre is used (LFW's subject is centred). Resumable: partial results are saved every 500 images.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facelens  # noqa: E402
from benchmarks.common import CACHE, DEFAULT_LFW, central_index, lfw_images, save_npz_atomic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    ap.add_argument("--model", default="buffalo_s")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()

    paths = lfw_images(args.lfw)[: args.limit]
    out = CACHE / f"lfw_facelens_{Path(args.model).name}.npz"
    partial = out.with_name(out.stem + ".partial.npz")
    engine = facelens.Engine(model=args.model, threads=args.threads, quality_filter="NONE")
    n, d = len(paths), engine.embedding_size
    emb = np.zeros((n, d), np.float32)
    found = np.zeros(n, bool)
    n_faces = np.zeros(n, np.int16)
    seconds = np.zeros(n, np.float32)
    extra = np.full((n, 7), np.nan, np.float32)  # score, yaw, pitch, roll, sharpness, brightness, size
    start = 0
    if partial.exists():
        z = np.load(partial)
        if list(z["paths"]) == paths:
            start = int(z["done"])
            emb[:start], found[:start] = z["embeddings"][:start], z["found"][:start]
            n_faces[:start] = z["n_faces"][:start]
            seconds[:start], extra[:start] = z["seconds"][:start], z["extra"][:start]
    for i in tqdm(range(start, n), initial=start, total=n, desc="facelens LFW", unit="img"):
        file = args.lfw / "images" / paths[i]
        t0 = time.perf_counter()
        faces = engine.analyze(str(file))
        seconds[i] = time.perf_counter() - t0
        n_faces[i] = len(faces)
        if faces:
            f = faces[central_index([x.bbox.as_list() for x in faces], 250, 250)]  # type: ignore[misc]
            emb[i] = f.embedding
            found[i] = True
            extra[i] = (f.score, f.pose.yaw, f.pose.pitch, f.pose.roll, f.quality.sharpness,
                        f.quality.brightness, f.quality.face_size)
        if (i + 1) % 500 == 0:
            save_npz_atomic(partial, paths=np.array(paths), embeddings=emb, found=found, n_faces=n_faces,
                            seconds=seconds, extra=extra, done=np.array(i + 1))
    save_npz_atomic(out, paths=np.array(paths), embeddings=emb, found=found, n_faces=n_faces,
                    seconds=seconds, extra=extra, model_sha256=np.array(engine.model_sha256))
    partial.unlink(missing_ok=True)
    print(f"{out}: {found.sum()}/{n} images with a face, median {np.median(seconds) * 1000:.1f} ms/img")


if __name__ == "__main__":
    main()
