"""facelens search with its vectors in Milvus against the same collection on FAISS, in one run.

    python benchmarks/bench_milvus.py --uri milvus://127.0.0.1:19530 --size 200000 [--queries 300]
    python benchmarks/bench_milvus.py --uri milvus://127.0.0.1:19530 --size 20000 --synthetic

The gallery is bench_search.py's (real LFW/UTKFace embeddings padded with synthetic ones; needs
benchmarks/.cache/lfw_facelens_buffalo_s.npz from embed_lfw.py) or, with --synthetic (or when that
cache is missing), unit Gaussian vectors whose probes are noisy copies of gallery rows. Both stores get
the same faces through FaceStore.add_images (SQLite + the store), then each answers the same single-query
searches (k=1 and k=10) through FaceStore.search: candidates from the store, float16 re-rank, exact
float32 scores from SQLite. Reported: recall@1 (the exact top hit found) and recall@10 against a
brute-force pass, p50/p95 latency per store, and the build time. Never run on milvus-lite (its search
is a slow pure-Python engine: correct, not timed). Results: benchmarks/results/milvus<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import CACHE, ROOT  # noqa: E402


def gallery(size: int, n_queries: int, synthetic: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """(chunks of gallery rows, probes)."""
    if not synthetic and (CACHE / "lfw_facelens_buffalo_s.npz").exists():
        from benchmarks.bench_search import Gallery

        g = Gallery(size)
        return [rows for _, rows in g.chunks()], g.probes[:n_queries].astype(np.float32)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((size, 512), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    mates = rows[rng.choice(size, n_queries, replace=False)]
    probes = mates + 0.06 * rng.standard_normal(mates.shape, dtype=np.float32)  # cosine ~0.6 to its mate
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return [rows[s : s + 100_000] for s in range(0, size, 100_000)], probes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uri", required=True, help="milvus://HOST:PORT (with ?index=... to choose the index)")
    ap.add_argument("--size", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--tag", default="")
    ap.add_argument("--no-wait", action="store_true", help="search Milvus before it has indexed every row")
    args = ap.parse_args()
    from facelens.store import FaceRecord, FaceStore

    chunks, probes = gallery(args.size, args.queries, args.synthetic)
    scores = np.concatenate([probes @ rows.T for rows in chunks], axis=1)
    exact = np.argsort(-scores, axis=1)[:, :10]  # row numbers = insertion order
    del scores
    tmp = Path(tempfile.mkdtemp(prefix="facelens-bench-milvus-"))
    target = ROOT / "benchmarks" / "results" / f"milvus{args.tag}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    out: dict = {"size": args.size, "queries": len(probes), "uri": args.uri,
                 "gallery": "synthetic" if args.synthetic or not (CACHE / "lfw_facelens_buffalo_s.npz").exists()
                 else "bench_search"}
    for store_uri in ("faiss", args.uri):
        t0 = time.perf_counter()
        store = FaceStore.create(tmp / store_uri.replace(":", "_").replace("/", "_"), name="bench",
                                 model_name="buffalo_s", model_sha256="-", dim=512, store=store_uri)
        row_of_face: dict[str, int] = {}
        n = 0
        for rows in chunks:
            for s in range(0, len(rows), 10_000):
                part = rows[s : s + 10_000]
                added = store.add_images([(str(n + i), f"{n + i:064x}", None, [FaceRecord((0, 0, 1, 1), 1.0, {}, v)])
                                          for i, v in enumerate(part)])
                row_of_face.update((faces[0].face_id, n + i) for i, (faces, _) in enumerate(added))
                n += len(part)
            print(f"  {store_uri}: {n:,} faces, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        store.save_index()
        build_s = time.perf_counter() - t0
        res: dict = {"build_s": round(build_s, 1), "index_factory": store.index_factory}
        wait = getattr(store.vectors, "wait_indexed", None)
        if wait is not None and not args.no_wait:  # (searched before, its rows use Milvus's interim index)
            res["indexed"] = wait()
            res["index_wait_s"] = round(time.perf_counter() - t0 - build_s, 1)
        for k in (1, 10):
            lat, hit1, hit10 = [], 0, 0
            for q, want in zip(probes, exact, strict=True):
                t = time.perf_counter()
                [hits] = store.search(q[None], k)
                lat.append((time.perf_counter() - t) * 1000)
                got = [row_of_face[f.face_id] for f, _ in hits]
                hit1 += bool(got) and got[0] == want[0]
                hit10 += len(set(got) & set(want[:k].tolist()))
            qs = statistics.quantiles(lat, n=20)
            res[f"k{k}"] = {"recall_at_1": round(hit1 / len(probes), 4),
                            f"recall_at_{k}": round(hit10 / (k * len(probes)), 4),
                            "p50_ms": round(statistics.median(lat), 2), "p95_ms": round(qs[18], 2)}
        out[store_uri if store_uri == "faiss" else "milvus"] = res
        print(json.dumps({store_uri: res}), file=sys.stderr)
        target.write_text(json.dumps(out, indent=2) + "\n")  # (each store's results as soon as they exist)
        store.close()
        FaceStore.delete(tmp / store_uri.replace(":", "_").replace("/", "_"), name="bench")  # (drops the Milvus one)
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
