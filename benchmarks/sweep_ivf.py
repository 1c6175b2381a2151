"""Recall and latency of FAISS index types on the search-benchmark gallery (no SQLite), to choose
FaceStore's defaults.

    python benchmarks/sweep_ivf.py --size 1000000 [--queries 300]

Same gallery and probes as bench_search.py. For each index: train on the same sample FaceStore
would use (40 points per list), add everything, then single-query searches of 10 results: recall@1 /
recall@10 against exact search and p50 latency on one thread, for several nprobe values and, for
Refine indexes, several k-factors (candidates re-ranked per result).

    python benchmarks/sweep_ivf.py --size 1000000 --factories "IVF1024,PQ64x4fs,Refine(SQfp16)" \
        "IVF1024,PQ128x4fs,Refine(SQfp16)" --nprobes 512 1024 --k-factors 64 400 800 1600
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_search import Gallery  # noqa: E402
from benchmarks.common import ROOT  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--factories", nargs="+", default=["IVF1024,SQfp16", "IVF4096,SQfp16"])
    ap.add_argument("--nprobes", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--k-factors", type=int, nargs="+", default=[16],
                    help="candidates re-ranked per result (Refine indexes)")
    ap.add_argument("--tag", default="", help="suffix of the results file")
    ap.add_argument("--embeddings", type=Path, help="the LFW embeddings cache (as bench_search.py --embeddings)")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    g = Gallery(args.size, embeddings=args.embeddings)
    gallery = np.concatenate([rows for _, rows in g.chunks()])
    gallery_ids = np.array([g.identity(i) for i in range(len(g.real))] + [""] * (len(gallery) - len(g.real)))
    probes, probe_ids = g.probes[: args.queries], g.probe_ids[: args.queries]
    flat = faiss.IndexFlatIP(gallery.shape[1])
    flat.add(gallery)
    lat = []
    exact = np.zeros((len(probes), 10), np.int64)
    for i, q in enumerate(probes):
        t = time.perf_counter()
        _, ids = flat.search(q[None], 10)
        lat.append(time.perf_counter() - t)
        exact[i] = ids[0]
    rows = [{"index": "Flat (exact)", "nprobe": None, "p50_ms": statistics.median(lat) * 1000,
             "recall_at_1": 1.0, "recall_at_10": 1.0,
             "rank1_true_mate": float(np.mean(gallery_ids[exact[:, 0]] == probe_ids))}]
    print(rows[-1], file=sys.stderr)
    del flat
    for factory in args.factories:
        index = faiss.index_factory(gallery.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        step = max(1, len(gallery) // (ivf.nlist * 40))
        t0 = time.perf_counter()
        faiss.omp_set_num_threads(2)
        index.train(gallery[::step])
        index.add(gallery)
        faiss.omp_set_num_threads(1)
        build_s = time.perf_counter() - t0
        refine = isinstance(index, faiss.IndexRefine)
        for nprobe in args.nprobes:
            for k_factor in args.k_factors if refine else [None]:
                ivf.nprobe = nprobe
                if refine:
                    index.k_factor = k_factor
                lat, found = [], []
                for q in probes:
                    t = time.perf_counter()
                    _, ids = index.search(q[None], 10)
                    lat.append(time.perf_counter() - t)
                    found.append(ids[0])
                f = np.array(found)
                rows.append({"index": factory, "nprobe": nprobe, "k_factor": k_factor, "build_s": round(build_s, 1),
                             "p50_ms": statistics.median(lat) * 1000,
                             "p99_ms": float(np.percentile(lat, 99)) * 1000,
                             "recall_at_1": float(np.mean(f[:, 0] == exact[:, 0])),
                             "recall_at_10": float(np.mean([len(set(a) & set(b)) / 10 for a, b in
                                                            zip(f, exact, strict=True)])),
                             "rank1_true_mate": float(np.mean(gallery_ids[f[:, 0]] == probe_ids))})
                print(rows[-1], file=sys.stderr)
        del index
    out = ROOT / "benchmarks" / "results" / f"sweep_ivf_{args.size}{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print("| index | nprobe | k-factor | p50 ms (1 thread) | recall@1 | recall@10 | rank-1 true mate |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['index']} | {r['nprobe'] or '-'} | {r.get('k_factor') or '-'} | {r['p50_ms']:.1f} | "
              f"{r['recall_at_1']:.3f} | "
              f"{r['recall_at_10']:.3f} | {r['rank1_true_mate']:.3f} |")


if __name__ == "__main__":
    main()
