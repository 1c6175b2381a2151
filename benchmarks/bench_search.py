"""Search speed, recall and memory of a collection, against the numpy scan face_recognition does.

    python benchmarks/bench_search.py --sizes 100000 1000000 [--queries 300]

Galleries: the facelens embeddings of every LFW image (benchmarks/.cache/lfw_facelens_buffalo_s.npz,
made by embed_lfw.py), padded to the requested size with synthetic embeddings drawn from a Gaussian
with the real embeddings' mean and covariance, then L2-normalised. For each LFW person with two or
more photos the first photo is in the gallery and the second is a probe, so every probe has a true
mate (rank-1 counts a top hit of the probe's identity, whichever of their photos it is).

Each size runs in its own process: build the collection through FaceStore (SQLite + FAISS, as
`facelens index` would) and close it; then, in a fresh process that holds only the collection (its
peak RSS is reported), reopen it (timed) and run single-query searches through FaceStore.search (FAISS
+ the SQLite lookup of the hits) with FAISS using 1 and 2 threads; then the same searches as a numpy
distance scan over all vectors. Results: benchmarks/results/search.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import CACHE, ROOT, identity  # noqa: E402


def gallery_and_probes(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray],
                                                           dict]:
    z = np.load(CACHE / "lfw_facelens_buffalo_s.npz")
    emb = z["embeddings"].astype(np.float32)
    labels = np.array([identity(str(p)) for p in z["paths"]])
    first: dict[str, int] = {}
    probes, mates = [], []
    for i, lab in enumerate(labels):
        if lab not in first:
            first[lab] = i
        elif len([p for p in probes if labels[p] == lab]) == 0:
            probes.append(i)
            mates.append(first[lab])
    probe_set = set(probes)
    real = [i for i in range(len(labels)) if i not in probe_set]
    rng = np.random.default_rng(seed)
    mu = emb.mean(axis=0)
    cov = np.cov(emb, rowvar=False)
    n_syn = max(size - len(real), 0)
    syn = rng.multivariate_normal(mu, cov, size=n_syn, method="cholesky").astype(np.float32) if n_syn else \
        np.zeros((0, emb.shape[1]), np.float32)
    syn /= np.linalg.norm(syn, axis=1, keepdims=True) + 1e-12
    gallery = np.concatenate([emb[real], syn])[:size]
    # identity of each gallery row ("" for synthetic rows) and of each probe
    gallery_ids = np.concatenate([labels[real], np.full(n_syn, "", dtype=labels.dtype)])[:size]
    # how alike the synthetic faces are to real ones: impostor score percentiles
    a = emb[rng.choice(len(emb), 2000)]
    b = emb[rng.choice(len(emb), 2000)]
    stats = {"real_vs_real_p50_p99": np.percentile((a * b).sum(1), [50, 99]).round(3).tolist()}
    if n_syn:
        s = syn[rng.choice(n_syn, 2000)]
        stats["synthetic_vs_real_p50_p99"] = np.percentile((s * b).sum(1), [50, 99]).round(3).tolist()
        s2 = syn[rng.choice(n_syn, 2000)]
        stats["synthetic_vs_synthetic_p50_p99"] = np.percentile((s * s2).sum(1), [50, 99]).round(3).tolist()
    return gallery, emb[probes], (gallery_ids, labels[probes]), stats


def run_size(size: int, n_queries: int) -> dict:

    from facelens.store import FaceRecord, FaceStore

    gallery, probes, (gallery_ids, probe_ids), stats = gallery_and_probes(size)
    probes, probe_ids = probes[:n_queries], probe_ids[:n_queries]
    tmp = Path(tempfile.mkdtemp(prefix="facelens-bench-"))
    try:
        t0 = time.perf_counter()
        store = FaceStore.create(tmp / "c", name="bench", model_name="buffalo_s", model_sha256="-", dim=512)
        batch = 20_000
        for s in range(0, size, batch):
            store.add_images([(str(i), str(i), None, [FaceRecord((0, 0, 1, 1), 1.0, {}, gallery[i])])
                              for i in range(s, min(s + batch, size))])
        store.close()
        build_s = time.perf_counter() - t0
        exact_top = np.zeros((len(probes), 10), dtype=np.int64)
        for i, q in enumerate(probes):  # exact top-10 by brute force, one query at a time (memory)
            s_all = gallery @ q
            part = np.argpartition(-s_all, 10)[:10]
            exact_top[i] = part[np.argsort(-s_all[part])]
        np.save(tmp / "probes.npy", probes)
        # Open and search in a fresh process, so that its peak RSS is the collection's, not this
        # process's gallery generation.
        proc = subprocess.run([sys.executable, __file__, "--search", str(tmp)], capture_output=True, text=True,
                              check=True)
        searched = json.loads(proc.stdout.strip().splitlines()[-1])
        out: dict = {"size": size, "queries": len(probes), "build_s": round(build_s, 1),
                     "open_s": searched["open_s"], "index": searched["index"],
                     "peak_rss_gb": searched["peak_rss_gb"], "synthetic_stats": stats}
        for threads in (1, 2):
            hits = searched[f"hits_{threads}t"]
            r1 = np.mean([h[:1] == list(e[:1]) for h, e in zip(hits, exact_top, strict=True)])
            r10 = np.mean([len(set(h) & set(e)) / 10 for h, e in zip(hits, exact_top, strict=True)])
            rank1 = np.mean([bool(h) and gallery_ids[h[0]] == pid for h, pid in zip(hits, probe_ids, strict=True)])
            out[f"facelens_{threads}t"] = {**searched[f"latency_{threads}t"], "recall_at_1": float(r1),
                                           "recall_at_10": float(r10), "rank1_true_mate": float(rank1)}
        lat = []
        n_numpy = len(probes) if size < 500_000 else min(len(probes), 30)  # each query allocates (n, d)
        for q in probes[:n_numpy]:  # face_recognition.face_distance: np.linalg.norm(known - face, axis=1)
            t = time.perf_counter()
            d = np.linalg.norm(gallery - q, axis=1)
            np.argpartition(d, 10)[:10]
            lat.append(time.perf_counter() - t)
        out["numpy_scan"] = {"p50_ms": statistics.median(lat) * 1000, "p99_ms": float(np.percentile(lat, 99)) * 1000,
                             "queries": n_numpy}
        out["ratio_numpy_over_facelens_1t_p50"] = out["numpy_scan"]["p50_ms"] / out["facelens_1t"]["p50_ms"]
        out["disk_gb"] = sum(f.stat().st_size for f in (tmp / "c").iterdir()) / 1024**3
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def search_process(folder: Path) -> dict:
    """Open the collection, search each probe with 1 and 2 FAISS threads; only FaceStore in memory."""
    import faiss

    from facelens.store import FaceStore

    probes = np.load(folder / "probes.npy")
    t0 = time.perf_counter()
    store = FaceStore.open(folder / "c", name="bench")
    out: dict = {"open_s": round(time.perf_counter() - t0, 2), "index": store.index_factory}
    for threads in (1, 2):
        faiss.omp_set_num_threads(threads)
        for q in probes[:5]:
            store.search(q[None], 10)
        lat, hits = [], []
        for q in probes:
            t = time.perf_counter()
            res = store.search(q[None], 10)[0]
            lat.append(time.perf_counter() - t)
            hits.append([int(f.external_image_id or -1) for f, _ in res])
        out[f"hits_{threads}t"] = hits
        out[f"latency_{threads}t"] = {"p50_ms": statistics.median(lat) * 1000,
                                      "p99_ms": float(np.percentile(lat, 99)) * 1000}
    store.close()
    # VmHWM, not getrusage: Linux carries a parent's maxrss across fork+exec into the child's rusage.
    hwm_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                  if line.startswith("VmHWM:"))
    out["peak_rss_gb"] = hwm_kb / 1024**2
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--search", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.search:
        print(json.dumps(search_process(args.search)))
        return
    if args.one:
        print(json.dumps(run_size(args.one, args.queries)))
        return
    results = []
    for size in args.sizes:
        print(f"size {size:,} ...", file=sys.stderr)
        proc = subprocess.run([sys.executable, __file__, "--one", str(size), "--queries", str(args.queries)],
                              capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(json.dumps(r, indent=1), file=sys.stderr)
    out = ROOT / "benchmarks" / "results" / "search.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print("| faces | index | p50 1t (ms) | p99 1t | p50 2t | p99 2t | recall@1 | recall@10 | rank-1 true mate | "
          "numpy scan p50 | numpy/facelens | open (s) | peak RSS (GB) |")
    print("|---" * 13 + "|")
    for r in results:
        a, b = r["facelens_1t"], r["facelens_2t"]
        print(f"| {r['size']:,} | {r['index']} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} | {b['p50_ms']:.1f} | "
              f"{b['p99_ms']:.1f} | {a['recall_at_1']:.3f} | {a['recall_at_10']:.3f} | {a['rank1_true_mate']:.3f} | "
              f"{r['numpy_scan']['p50_ms']:.1f} | {r['ratio_numpy_over_facelens_1t_p50']:.1f}x | {r['open_s']} | "
              f"{r['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
    main()
