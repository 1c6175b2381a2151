"""Reference embeddings for LFW from the ``face_recognition`` library.

Runs face_recognition's own pipeline over every LFW image, exactly as a user
of that library would::

    img = face_recognition.load_image_file(path)
    locs = face_recognition.face_locations(img)          # HOG, upsample=1
    enc = face_recognition.face_encodings(img, known_face_locations=[chosen],
                                          num_jitters=1, model="small")

When several faces are detected, the one whose box centre is closest to the
image centre is kept (standard LFW practice: the subject is centred).

The result is cached as an ``.npz`` with arrays

``paths``       str (n,)       paths relative to ``<lfw>/images``, sorted
``embeddings``  float32 (n,128) zeros where no face was found
``found``       bool (n,)
``n_faces``     int16 (n,)     number of faces detected
``seconds``     float32 (n,)   wall time of detect + encode (not image loading)

The run is resumable: progress is saved every ``--save-every`` images to
``<out stem>.partial.npz`` and picked up again on restart.

Usage (from the repository root)::

    python benchmarks/_face_recognition_lfw.py --lfw ../shared/data/lfw \
        --out benchmarks/.cache/lfw_face_recognition.npz [--limit N]
"""

from __future__ import annotations

import os

# Keep everything single-threaded (must happen before numpy / dlib import).
# dlib-bin from PyPI is CPU-only; its DNN code may use a BLAS library.
for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ.setdefault(_var, "1")

import argparse
import signal
import sys
import time
from pathlib import Path

import numpy as np

EMBEDDING_DIM = 128
DEFAULT_OUT = Path(__file__).resolve().parent / ".cache" / "lfw_face_recognition.npz"


def list_lfw_images(lfw_root: str | os.PathLike) -> list[str]:
    """Sorted paths of all LFW images, relative to ``<lfw_root>/images``."""
    images = Path(lfw_root) / "images"
    if not images.is_dir():
        raise FileNotFoundError(f"no images/ directory under {lfw_root}")
    rel = [
        f"{person.name}/{img.name}"
        for person in images.iterdir()
        if person.is_dir()
        for img in person.iterdir()
        if img.suffix.lower() == ".jpg"
    ]
    return sorted(rel)


def choose_central_face(locations, image_shape) -> int:
    """Index of the (top, right, bottom, left) box whose centre is closest to
    the image centre."""
    h, w = image_shape[:2]
    cy, cx = h / 2.0, w / 2.0
    best, best_d = 0, float("inf")
    for i, (top, right, bottom, left) in enumerate(locations):
        d = ((top + bottom) / 2.0 - cy) ** 2 + ((left + right) / 2.0 - cx) ** 2
        if d < best_d:
            best, best_d = i, d
    return best


def encode_image(path: str | os.PathLike):
    """Run face_recognition on one image.

    Returns ``(embedding or None, n_faces, seconds)`` where ``seconds`` is the
    wall time of detection + encoding.
    """
    import face_recognition

    img = face_recognition.load_image_file(str(path))
    t0 = time.perf_counter()
    locations = face_recognition.face_locations(img)
    if not locations:
        return None, 0, time.perf_counter() - t0
    chosen = locations[choose_central_face(locations, img.shape)]
    enc = face_recognition.face_encodings(
        img, known_face_locations=[chosen], num_jitters=1, model="small"
    )
    dt = time.perf_counter() - t0
    return np.asarray(enc[0], dtype=np.float32), len(locations), dt


def partial_path_for(out: str | os.PathLike) -> Path:
    out = Path(out)
    stem = out.name[:-4] if out.name.endswith(".npz") else out.name
    return out.with_name(stem + ".partial.npz")


def _save_npz_atomic(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # Pass a file object so numpy does not append ".npz" to the tmp name.
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _pack(paths, embeddings, found, n_faces, seconds, n_done):
    return dict(
        paths=np.asarray(paths[:n_done], dtype=str),
        embeddings=np.asarray(embeddings[:n_done], dtype=np.float32),
        found=np.asarray(found[:n_done], dtype=bool),
        n_faces=np.asarray(n_faces[:n_done], dtype=np.int16),
        seconds=np.asarray(seconds[:n_done], dtype=np.float32),
    )


def load_cache(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _load_partial(partial: Path, paths: list[str]):
    """Return the loaded partial arrays if they are a prefix of ``paths``."""
    try:
        data = load_cache(partial)
    except Exception as exc:  # corrupt / unreadable: start over
        print(f"ignoring unreadable partial file {partial}: {exc}", file=sys.stderr)
        return None
    done = [str(p) for p in data["paths"]]
    if len(done) > len(paths) or done != paths[: len(done)]:
        print(f"ignoring partial file {partial}: image list does not match",
              file=sys.stderr)
        return None
    return data


def run(
    lfw_root: str | os.PathLike,
    out: str | os.PathLike = DEFAULT_OUT,
    limit: int | None = None,
    save_every: int = 500,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Encode all (or the first ``limit``) LFW images and write the cache."""
    out = Path(out)
    partial = partial_path_for(out)
    images_dir = Path(lfw_root) / "images"
    paths = list_lfw_images(lfw_root)
    if limit is not None:
        paths = paths[:limit]
    n = len(paths)

    embeddings = np.zeros((n, EMBEDDING_DIM), dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    n_faces = np.zeros(n, dtype=np.int16)
    seconds = np.zeros(n, dtype=np.float32)

    start = 0
    if partial.exists():
        data = _load_partial(partial, paths)
        if data is not None:
            start = len(data["paths"])
            embeddings[:start] = data["embeddings"]
            found[:start] = data["found"]
            n_faces[:start] = data["n_faces"]
            seconds[:start] = data["seconds"]
            print(f"resuming from {partial}: {start}/{n} done", file=sys.stderr)

    def save_partial(n_done):
        _save_npz_atomic(partial, **_pack(paths, embeddings, found, n_faces,
                                          seconds, n_done))

    from tqdm import tqdm

    bar = tqdm(total=n, initial=start, file=sys.stderr, disable=not progress,
               unit="img", dynamic_ncols=True, mininterval=2.0)
    i = start
    try:
        for i in range(start, n):
            emb, nf, dt = encode_image(images_dir / paths[i])
            if emb is not None:
                embeddings[i] = emb
                found[i] = True
            n_faces[i] = nf
            seconds[i] = dt
            bar.update(1)
            if (i + 1) % save_every == 0 and i + 1 < n:
                save_partial(i + 1)
                bar.set_postfix(found=f"{found[: i + 1].mean():.3f}",
                                s_img=f"{np.median(seconds[: i + 1]):.3f}")
    except KeyboardInterrupt:
        save_partial(i)  # image i was not finished
        bar.close()
        print(f"interrupted; progress saved to {partial} ({i}/{n})",
              file=sys.stderr)
        raise
    bar.close()

    result = _pack(paths, embeddings, found, n_faces, seconds, n)
    _save_npz_atomic(out, **result)
    if partial.exists():
        partial.unlink()
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", required=True,
                    help="LFW root (containing images/<Name>/<Name>_NNNN.jpg)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output .npz")
    ap.add_argument("--limit", type=int, default=None,
                    help="only the first N images (sorted order)")
    ap.add_argument("--save-every", type=int, default=500,
                    help="save partial progress every N images")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    # `kill <pid>` of a background run saves progress like Ctrl-C does.
    def _on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_term)

    t0 = time.time()
    try:
        res = run(args.lfw, args.out, limit=args.limit,
                  save_every=args.save_every, progress=not args.no_progress)
    except KeyboardInterrupt:
        return 130
    n = len(res["paths"])
    nf = res["n_faces"]
    print(
        f"wrote {args.out}: {n} images, found {int(res['found'].sum())} "
        f"({res['found'].mean():.2%}), >1 face {int((nf > 1).sum())}, "
        f"median {np.median(res['seconds']):.3f} s/img, "
        f"mean {res['seconds'].mean():.3f} s/img, wall {time.time() - t0:.0f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
