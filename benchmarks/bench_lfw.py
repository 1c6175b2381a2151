"""facelens vs face_recognition on LFW, side by side: accuracy, detection failures, speed.

    make bench            # or, with the venv active:
    python benchmarks/embed_lfw.py                       # facelens embeddings of all LFW (cached)
    python benchmarks/_face_recognition_lfw.py           # face_recognition embeddings (cached)
    python benchmarks/bench_lfw.py [--lfw ../shared/data/lfw] [--timing-images 100] [--repeats 3]

Accuracy (from the cached embeddings of all 13,233 images):
- LFW View 2 10-fold accuracy on pairs.txt: for each fold, the threshold that is best on the other nine
  folds is applied to it; mean and standard deviation over folds.
- TAR at FMR 1e-3, 1e-4, 1e-5 over *all* pairs of LFW: every same-person pair (242,014) against every
  different-person pair (about 87.5 million).
- Images without a detected face are kept: their pairs count as non-matches (an end-to-end error for a
  same-person pair).
Each system uses its own score: cosine similarity for facelens, minus the Euclidean distance of raw
128-d encodings for face_recognition (its own `face_distance`).

Speed (measured now, interleaved image by image so both see the same machine state): median
wall time of decode + detect + embed of one 250x250 LFW JPEG, with 1 and 2 threads.

Writes benchmarks/results/lfw.json and prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import CACHE, DEFAULT_LFW, ROOT, central_index, identity, read_pairs  # noqa: E402

FMRS = (1e-3, 1e-4, 1e-5)


def _scorer(name: str, emb: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if name == "face_recognition":
        sq = (emb.astype(np.float64) ** 2).sum(axis=1)
        return lambda i, j: -np.sqrt(np.maximum(sq[i][:, None] + sq[j][None, :] - 2.0 * (emb[i] @ emb[j].T), 0.0))
    return lambda i, j: emb[i] @ emb[j].T


def ten_fold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """LFW protocol: per fold, the best threshold on the other folds, applied to this one."""
    accs = []
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        cands = np.unique(scores[train])
        # accuracy(t) = (#same with s >= t + #different with s < t) / n, at every candidate at once
        s_same = np.sort(scores[train][same[train]])
        s_diff = np.sort(scores[train][~same[train]])
        tp = len(s_same) - np.searchsorted(s_same, cands, side="left")
        tn = np.searchsorted(s_diff, cands, side="left")
        best_t = float(cands[int(np.argmax(tp + tn))])
        pred = scores[test] >= best_t
        accs.append(float((pred == same[test]).mean()))
    return float(np.mean(accs)), float(np.std(accs))


def all_pairs_tar(name: str, emb: np.ndarray, found: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """TAR at each FMR over every pair; missing faces score -inf (never accepted)."""
    score = _scorer(name, emb)
    _, codes = np.unique(labels, return_inverse=True)
    n = len(labels)
    imp_parts, gen_parts = [], []
    for start in range(0, n, 1024):
        rows = np.arange(start, min(start + 1024, n))
        cols = np.arange(start + 1, n)
        s = score(rows, cols).astype(np.float32)
        ok = found[rows][:, None] & found[cols][None, :]
        s[~ok] = -np.inf
        upper = cols[None, :] > rows[:, None]
        same = codes[rows][:, None] == codes[cols][None, :]
        imp_parts.append(s[upper & ~same])
        gen_parts.append(s[upper & same])
    imp = np.concatenate(imp_parts)
    gen = np.concatenate(gen_parts)
    out: dict[str, Any] = {"impostor_pairs": int(imp.size), "genuine_pairs": int(gen.size)}
    for f in FMRS:
        k = int(np.floor(f * imp.size))  # at most k impostor pairs may be accepted
        thr = np.partition(imp, imp.size - k - 1)[imp.size - k - 1]  # accept s > thr
        out[f"tar_at_fmr_{f:g}"] = float((gen > thr).mean())
        out[f"threshold_at_fmr_{f:g}"] = float(thr)
    return out


def accuracy(name: str, cache: Path, lfw: Path) -> dict[str, Any]:
    z = np.load(cache)
    paths = [str(p) for p in z["paths"]]
    emb, found = z["embeddings"].astype(np.float32), z["found"].astype(bool)
    index = {p: i for i, p in enumerate(paths)}
    pairs = read_pairs(lfw)
    ia = np.array([index[a] for _, a, _, _ in pairs])
    ib = np.array([index[b] for _, _, b, _ in pairs])
    same = np.array([s for *_, s in pairs])
    folds = np.array([f for f, *_ in pairs])
    score = _scorer(name, emb)
    s = np.array([float(score(np.array([a]), np.array([b]))[0, 0]) for a, b in zip(ia, ib, strict=True)])
    s[~(found[ia] & found[ib])] = -np.inf
    mean, std = ten_fold_accuracy(s, same, folds)
    labels = np.array([identity(p) for p in paths])
    res = {"images": len(paths), "no_face": int((~found).sum()),
           "pairs_with_missing_face": int((~(found[ia] & found[ib])).sum()),
           "lfw_10fold_accuracy": mean, "lfw_10fold_std": std}
    res.update(all_pairs_tar(name, emb, found, labels))
    res["no_face_images"] = [p for p, f in zip(paths, found, strict=True) if not f]
    return res


def timing(lfw: Path, n_images: int, repeats: int, *, photos: list[str] | None = None,
           openvino: bool = True, thread_counts: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Median wall ms of decode + detect + embed per image, every system interleaved image by image.

    ``photos``: time these files instead of ``n_images`` random LFW images (face_recognition then embeds
    the largest face). ``openvino``: also facelens with FACELENS_RUNTIME=openvino (when installed).
    ``thread_counts``: onnxruntime intra-op threads of the facelens engines. A 2-thread engine's pool spins
    for a while after each run, which slows (and bills CPU time to) whatever runs next in the process: time
    1-thread systems alone (``--threads 1``) to compare them with each other.
    """
    import importlib.util
    import subprocess

    import face_recognition

    import facelens

    if photos:
        paths = list(photos)
    else:
        rng = np.random.default_rng(0)
        all_paths = sorted((lfw / "images").glob("*/*.jpg"))
        paths = [str(all_paths[i]) for i in rng.choice(len(all_paths), n_images, replace=False)]
    engines: dict[str, facelens.Engine] = {f"facelens_{t}thread{'s' if t > 1 else ''}": facelens.Engine(threads=t)
                                           for t in thread_counts}
    if openvino and importlib.util.find_spec("openvino") is not None:
        old = os.environ.get("FACELENS_RUNTIME")
        os.environ["FACELENS_RUNTIME"] = "openvino"
        try:
            engines["facelens_openvino_1thread"] = facelens.Engine(threads=1)
        finally:
            if old is None:
                os.environ.pop("FACELENS_RUNTIME")
            else:
                os.environ["FACELENS_RUNTIME"] = old

    def run_facelens(engine: facelens.Engine) -> Callable[[str], None]:
        def f(p: str) -> None:
            faces = engine.analyze(p)
            assert faces
        return f

    def run_fr(p: str) -> None:
        img = face_recognition.load_image_file(p)
        locs = face_recognition.face_locations(img)
        if locs:
            boxes = [(left, top, right, bottom) for top, right, bottom, left in locs]
            h, w = img.shape[:2]
            if photos:
                chosen = max(locs, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
            else:
                chosen = locs[central_index(boxes, w, h)]
            face_recognition.face_encodings(img, known_face_locations=[chosen], num_jitters=1, model="small")

    systems: dict[str, Callable[[str], None]] = {k: run_facelens(e) for k, e in engines.items()}
    systems["face_recognition"] = run_fr
    for fn in systems.values():  # warm-up
        for p in paths[:3]:
            fn(p)
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    times: dict[str, list[float]] = {k: [] for k in systems}
    cpu: dict[str, list[float]] = {k: [] for k in systems}  # process CPU time: less distorted by other load
    names = list(systems)
    for r in range(repeats):
        for i, p in enumerate(paths):
            k0 = (i + r) % len(names)
            order = names[k0:] + names[:k0]  # rotate who goes first
            for k in order:
                t0, c0 = time.perf_counter(), time.process_time()
                systems[k](p)
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    med_cpu = {k: statistics.median(v) * 1000 for k, v in cpu.items()}
    out: dict[str, Any] = {"images": len(paths), "repeats": repeats, "median_ms": med, "median_cpu_ms": med_cpu,
                           "uptime_before": uptime_before,
                           "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True,
                                                          check=False).stdout.strip()}
    for k in engines:
        out[f"speedup_{k.removeprefix('facelens_')}"] = med["face_recognition"] / med[k]
        out[f"cpu_speedup_{k.removeprefix('facelens_')}"] = med_cpu["face_recognition"] / med_cpu[k]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    ap.add_argument("--timing-images", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--photos", nargs="*", default=None,
                    help="time these photos (e.g. the 1080p-class ones in ../shared/data/samples) instead of LFW")
    ap.add_argument("--threads", default="1,2", help="facelens engines' onnxruntime threads, comma-separated")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lfw.json")
    args = ap.parse_args()

    systems = {"facelens (buffalo_s)": ("facelens", CACHE / "lfw_facelens_buffalo_s.npz"),
               "facelens (dlib backend)": ("facelens", CACHE / "lfw_facelens_dlib.npz"),
               "face_recognition 1.3.0": ("face_recognition", CACHE / "lfw_face_recognition.npz")}
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                           "processor": platform.processor() or platform.machine()}}
    for label, (kind, cache) in systems.items():
        if args.skip_accuracy:
            break
        if not cache.exists():
            print(f"skipping {label}: {cache} missing (run its embedding script first)", file=sys.stderr)
            continue
        print(f"accuracy: {label} ...", file=sys.stderr)
        results[label] = accuracy(kind, cache, args.lfw)
    fl = results.get("facelens (buffalo_s)")
    fr = results.get("face_recognition 1.3.0")
    if fl and fr:
        results["facelens_misses_where_face_recognition_finds"] = sorted(
            set(fl["no_face_images"]) - set(fr["no_face_images"]))
    if not args.skip_timing:
        print("timing ...", file=sys.stderr)
        results["timing"] = timing(args.lfw, args.timing_images, args.repeats, photos=args.photos,
                                    thread_counts=tuple(int(t) for t in args.threads.split(",")))
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    print("| system | LFW 10-fold acc. | TAR@FMR1e-3 | TAR@FMR1e-4 | TAR@FMR1e-5 | images without face |")
    print("|---|---|---|---|---|---|")
    for label in systems:
        r = results.get(label)
        if r:
            print(f"| {label} | {r['lfw_10fold_accuracy'] * 100:.2f}% +- {r['lfw_10fold_std'] * 100:.2f} | "
                  + " | ".join(f"{r[f'tar_at_fmr_{f:g}'] * 100:.2f}%" for f in FMRS)
                  + f" | {r['no_face']} of {r['images']} |")
    if "timing" in results:
        t = results["timing"]
        print(f"\nmedian ms per image over {t['images']} images x {t['repeats']}: "
              + ", ".join(f"{k} {v:.1f}" for k, v in t["median_ms"].items()) + "; speed-up "
              + ", ".join(f"{k.removeprefix('speedup_')} {v:.1f}x" for k, v in t.items() if k.startswith("speedup_"))
              + "\nmedian CPU ms: " + ", ".join(f"{k} {v:.1f}" for k, v in t["median_cpu_ms"].items())
              + "; CPU speed-up " + ", ".join(f"{k.removeprefix('cpu_speedup_')} {v:.1f}x" for k, v in t.items()
                                             if k.startswith("cpu_speedup_"))
              + f"\n{t['uptime_before']} / {t['uptime_after']}")
    if "facelens_misses_where_face_recognition_finds" in results:
        print(f"images where face_recognition finds a face and facelens does not: "
              f"{results['facelens_misses_where_face_recognition_finds']}")


if __name__ == "__main__":
    main()
