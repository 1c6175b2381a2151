"""Search speed, recall and memory of a collection, against the numpy scan face_recognition does.

    python benchmarks/bench_search.py --sizes 100000 1000000 [--queries 300]
    python benchmarks/bench_search.py --sizes 10000000 --nprobes 512 1024 --keep /var/tmp/fl --tag _10m

Galleries: real embeddings first (facelens embeddings of every LFW image that is not a probe, from
benchmarks/.cache/lfw_facelens_buffalo_s.npz made by embed_lfw.py, then every UTKFace image when
benchmarks/.cache/utkface_facelens_buffalo_s.npz exists, made by embed_images.py), padded to the
requested size with synthetic embeddings drawn from a Gaussian with the LFW embeddings' mean and
covariance, L2-normalised, generated and stored in chunks of 100,000 so that 10M faces never sit in
memory at once. For each LFW person with two or more photos the first photo is in the gallery and the
second is a probe, so every probe has a true mate (rank-1 counts a top hit of the probe's identity).
Exact top-10s come from a brute-force pass over the same chunks.

Each size runs in its own process: build the collection through FaceStore (SQLite + FAISS + float16
re-rank file, as `facelens index` stores faces) and close it; then, in a fresh process that holds only
the collection (its peak RSS is reported), reopen it (timed) and run single-query searches through
FaceStore.search (FAISS, float16 re-rank, SQLite lookup and exact rescoring of the hits) with FAISS
using 1 and 2 threads, and with 1 thread at each --nprobes value; up to 1M, also the same searches as
a numpy distance scan over all vectors. Results: benchmarks/results/search<tag>.json.
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

ROUNDS = 3  # timed passes over the probes with 1 and with 2 threads, alternating; latencies pooled
VARIANT_ROUNDS = 2  # timed passes of every --variants setting, alternating


class Gallery:
    """The benchmark gallery, generated in chunks so that 10M faces need not fit in memory.

    Rows 0..R-1 are real embeddings (every LFW image that is not a probe, then every UTKFace image when
    its cache exists); the rest are synthetic: Gaussian with the real embeddings' mean and covariance,
    L2-normalised, chunk c drawn from its own seeded generator so any chunk can be regenerated.
    """

    CHUNK = 100_000

    def __init__(self, size: int, seed: int = 0, embeddings: Path | None = None) -> None:
        z = np.load(embeddings or CACHE / "lfw_facelens_buffalo_s.npz")
        done = int(z["done"]) if "done" in z else len(z["paths"])  # a partial cache: its first `done` images
        emb = z["embeddings"][:done].astype(np.float32)
        labels = np.array([identity(str(p)) for p in z["paths"][:done]])
        first: dict[str, int] = {}
        probes, seen = [], set()
        for i, lab in enumerate(labels):
            if lab not in first:
                first[lab] = i
            elif lab not in seen:
                probes.append(i)
                seen.add(lab)
        probe_set = set(probes)
        real_idx = [i for i in range(len(labels)) if i not in probe_set]
        real, real_ids = emb[real_idx], labels[real_idx]
        utk = CACHE / "utkface_facelens_buffalo_s.npz"
        if utk.exists():
            u = np.load(utk)
            real = np.concatenate([real, u["embeddings"][u["found"]].astype(np.float32)])
            real_ids = np.concatenate([real_ids, np.array([f"utk:{f}" for f in u["files"][u["found"]]])])
        self.size, self.seed = size, seed
        self.real, self.real_ids = real[:size], real_ids[:size]
        self.probes, self.probe_ids = emb[probes], labels[probes]
        self.mu = emb.mean(axis=0)
        self.chol = np.linalg.cholesky(np.cov(emb, rowvar=False) + 1e-9 * np.eye(emb.shape[1])).astype(np.float32)
        rng = np.random.default_rng(seed)
        a, b = emb[rng.choice(len(emb), 2000)], emb[rng.choice(len(emb), 2000)]
        self.stats = {"real": int(len(self.real)),
                      "real_vs_real_p50_p99": np.percentile((a * b).sum(1), [50, 99]).round(3).tolist()}
        if size > len(self.real):
            s, s2 = self._synthetic(0, 2000), self._synthetic(1, 2000)
            self.stats["synthetic_vs_real_p50_p99"] = np.percentile((s * b).sum(1), [50, 99]).round(3).tolist()
            self.stats["synthetic_vs_synthetic_p50_p99"] = np.percentile((s * s2).sum(1), [50, 99]).round(3).tolist()

    def _synthetic(self, chunk: int, n: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, chunk])
        x = rng.standard_normal((n, len(self.mu)), dtype=np.float32) @ self.chol.T + self.mu
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)

    def chunks(self):
        """(start row, (m, d) float32 rows) over the whole gallery."""
        yield 0, self.real
        start = len(self.real)
        c = 0
        while start < self.size:
            n = min(self.CHUNK, self.size - start)
            yield start, self._synthetic(c, n)
            start += n
            c += 1

    def identity(self, row: int) -> str:
        return str(self.real_ids[row]) if row < len(self.real) else ""


def run_size(size: int, n_queries: int, folder: Path | None, nprobes: list[int], reuse: bool = False,
             variants: list[str] | None = None, do_diagnose: bool = False, embeddings: Path | None = None,
             variant_threads: list[int] | None = None) -> dict:
    from facelens.store import FaceRecord, FaceStore

    gallery = Gallery(size, embeddings=embeddings)
    probes, probe_ids = gallery.probes[:n_queries], gallery.probe_ids[:n_queries]
    tmp = folder or Path(tempfile.mkdtemp(prefix="facelens-bench-"))
    reuse = reuse and (tmp / "c" / "faces.sqlite").is_file()  # search a collection kept by an earlier run
    try:
        t0 = time.perf_counter()
        store = None if reuse else FaceStore.create(tmp / "c", name="bench", model_name="buffalo_s",
                                                    model_sha256="-", dim=512)
        top_s = np.full((len(probes), 10), -np.inf, np.float32)  # exact top-10 by brute force, chunk by chunk
        top_i = np.full((len(probes), 10), -1, np.int64)
        numpy_lat: list[float] = []
        batch = 20_000
        for start, rows in gallery.chunks():
            for s in range(0, len(rows) if store is not None else 0, batch):
                part = rows[s : s + batch]
                store.add_images([(str(start + s + i), str(start + s + i), None,
                                   [FaceRecord((0, 0, 1, 1), 1.0, {}, v)]) for i, v in enumerate(part)])
            sc = probes @ rows.T
            cat_s = np.concatenate([top_s, sc], axis=1)
            cat_i = np.concatenate([top_i, np.broadcast_to(np.arange(start, start + len(rows)), sc.shape)], axis=1)
            best = np.argsort(-cat_s, axis=1)[:, :10]
            top_s, top_i = np.take_along_axis(cat_s, best, 1), np.take_along_axis(cat_i, best, 1)
            print(f"  {start + len(rows):,} faces stored, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if store is not None:
            store.close()
        build_s = time.perf_counter() - t0
        exact_top = top_i
        np.save(tmp / "probes.npy", probes)
        np.save(tmp / "exact_top.npy", exact_top)
        # Open and search in a fresh process, so that its peak RSS is the collection's, not this
        # process's gallery generation.
        cmd = [sys.executable, __file__, "--search", str(tmp), "--nprobes", *map(str, nprobes),
               "--variants", *(variants or []), "--variant-threads", *map(str, variant_threads or [1, 2])] + (
               ["--diagnose"] if do_diagnose else [])
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        searched = json.loads(proc.stdout.strip().splitlines()[-1])
        out: dict = {"size": size, "queries": len(probes), "build_s": None if reuse else round(build_s, 1),
                     "open_s": searched["open_s"], "index": searched["index"], "nprobe": searched["nprobe"],
                     "peak_rss_gb": searched["peak_rss_gb"], "gallery": gallery.stats}

        def quality(hits: list[list[int]]) -> dict:
            r1 = np.mean([h[:1] == list(e[:1]) for h, e in zip(hits, exact_top, strict=True)])
            r10 = np.mean([len(set(h) & set(e)) / 10 for h, e in zip(hits, exact_top, strict=True)])
            rank1 = np.mean([bool(h) and gallery.identity(h[0]) == pid for h, pid in zip(hits, probe_ids, strict=True)])
            # recall@1 where it matters: probes whose exact top hit is a match at FMR 1e-5 (score >= 0.3553)
            strong = top_s[:, 0] >= 0.3553
            r1_match = np.mean([h[:1] == list(e[:1]) for h, e, k in zip(hits, exact_top, strong, strict=True) if k])
            return {"recall_at_1": float(r1), "recall_at_10": float(r10), "rank1_true_mate": float(rank1),
                    "recall_at_1_of_matches": float(r1_match), "probes_with_a_match": int(strong.sum())}

        out["exact_rank1_true_mate"] = float(np.mean([gallery.identity(int(e[0])) == pid
                                                      for e, pid in zip(exact_top, probe_ids, strict=True)]))
        for threads in (1, 2):
            out[f"facelens_{threads}t"] = {**searched[f"latency_{threads}t"], **quality(searched[f"hits_{threads}t"])}
        out["nprobe_sweep"] = [{"nprobe": r["nprobe"], **r["latency"], **quality(r["hits"])}
                               for r in searched["sweep"]]
        out["plan_k10"] = searched["plan_k10"]
        out["diagnosis"] = searched.get("diagnosis")
        out["variants"] = [{"name": v["name"], "settings": v["settings"],
                            **{key: v[key] for key in v if key.startswith("k1")},
                            "k1": quality(v["hits_k1"]), "k10": quality(v["hits_k10"])} for v in searched["variants"]]
        if size <= 1_000_000:
            full = np.concatenate([rows for _, rows in gallery.chunks()])
            n_numpy = len(probes) if size < 500_000 else min(len(probes), 30)  # each query allocates (n, d)
            for q in probes[:n_numpy]:  # face_recognition.face_distance: np.linalg.norm(known - face, axis=1)
                t = time.perf_counter()
                d = np.linalg.norm(full - q, axis=1)
                np.argpartition(d, 10)[:10]
                numpy_lat.append(time.perf_counter() - t)
            del full
            out["numpy_scan"] = {"p50_ms": statistics.median(numpy_lat) * 1000,
                                 "p99_ms": float(np.percentile(numpy_lat, 99)) * 1000, "queries": n_numpy}
            out["ratio_numpy_over_facelens_1t_p50"] = out["numpy_scan"]["p50_ms"] / out["facelens_1t"]["p50_ms"]
        out["disk_gb"] = sum(f.stat().st_size for f in (tmp / "c").iterdir()) / 1024**3
        return out
    finally:
        if folder is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _parse_variants(specs: list[str]) -> list[tuple[str, dict[str, int]]]:
    """``name:CONST=value,CONST=value`` -> (name, {CONST: value}); the constants are module globals of
    facelens.store.collection that FaceStore.search reads at every call."""
    out = []
    for spec in specs:
        name, _, body = spec.partition(":")
        settings = {k: int(v) for k, v in (kv.split("=") for kv in body.split(",") if kv)}
        out.append((name, settings))
    return out


def diagnose(store, probes: np.ndarray, exact_vids: np.ndarray, depth: int = 32768) -> dict:
    """Where the exact top-10 are lost, stage by stage, with one thread: (1) the share lying in the
    lists probed; (2) the share among the best ``c`` PQ fast-scan candidates, for several ``c`` and
    nprobe; (3) the share the float16 re-rank of those candidates keeps in its top 10 and top 20."""
    import faiss

    ivf = faiss.extract_index_ivf(store._index)
    # a face's list: the centroid nearest its (float16) embedding, as FAISS assigned it when added
    vecs = store._rerank_rows(exact_vids.reshape(-1)).astype(np.float32)
    _, lists = ivf.quantizer.search(vecs, 1)
    lists = lists.reshape(exact_vids.shape)
    counts = [c for c in (640, 1024, 2048, 4096, 8192, 16384, 32768) if c <= depth]
    out: dict = {"depth": depth, "by_nprobe": []}
    for nprobe in sorted({ivf.nlist // 4, ivf.nlist // 2, (3 * ivf.nlist) // 4, ivf.nlist}):
        _, probed = ivf.quantizer.search(probes, nprobe)
        in_lists = np.mean([np.isin(lists[i], probed[i]).mean() for i in range(len(probes))])
        pq_in: dict[int, list[float]] = {c: [] for c in counts}
        f16_10: dict[int, list[float]] = {c: [] for c in counts}
        f16_20: dict[int, list[float]] = {c: [] for c in counts}
        lat: list[float] = []
        for i, q in enumerate(probes):
            t = time.perf_counter()
            _, ids = store._index.search(q[None], depth, params=faiss.SearchParametersIVF(nprobe=nprobe))
            lat.append(time.perf_counter() - t)
            want = set(exact_vids[i].tolist())
            for c in counts:
                cand = ids[:, :c]
                pq_in[c].append(len(want & set(cand[0].tolist())) / 10)
                kept = store._rerank(q[None], cand, 20)[0]
                f16_10[c].append(len(want & set(kept[:10].tolist())) / 10)
                f16_20[c].append(len(want & set(kept.tolist())) / 10)
        out["by_nprobe"].append({
            "nprobe": nprobe, "in_lists_probed": float(in_lists),
            "pq_search_p50_ms_depth": statistics.median(lat) * 1000,
            "in_pq_candidates": {c: float(np.mean(v)) for c, v in pq_in.items()},
            "after_f16_top10": {c: float(np.mean(v)) for c, v in f16_10.items()},
            "after_f16_top20": {c: float(np.mean(v)) for c, v in f16_20.items()}})
        print(out["by_nprobe"][-1], file=sys.stderr)
    return out


def search_process(folder: Path, nprobes: list[int], variants: list[str], do_diagnose: bool,
                   variant_threads: tuple[int, ...] = (1, 2)) -> dict:
    """Open the collection, search each probe with 1 and 2 FAISS threads (and, with one thread, at each
    of ``nprobes``); only FaceStore in memory. With ``variants``, also time each setting of the search
    constants (and the current one) for k=1 and k=10, in alternating rounds."""
    import faiss

    from facelens.store import FaceStore
    from facelens.store import collection as coll

    probes = np.load(folder / "probes.npy")
    t0 = time.perf_counter()
    store = FaceStore.open(folder / "c", name="bench")
    out: dict = {"open_s": round(time.perf_counter() - t0, 2), "index": store.index_factory}
    ivf = None if store.index_factory.startswith("IDMap") else faiss.extract_index_ivf(store._index)
    out["nprobe"] = ivf.nprobe if ivf is not None else None
    out["plan_k10"] = coll._plan(store._index, 10, True) if ivf is not None else None

    for q in probes:  # warm the OS page cache (float16 rows, SQLite pages) once, as a running service would be
        store.search(q[None], 10)

    def timed(k: int = 10) -> tuple[list[float], list[list[int]]]:
        for q in probes[:5]:
            store.search(q[None], k)
        lat, hits = [], []
        for q in probes:
            t = time.perf_counter()
            res = store.search(q[None], k)[0]
            lat.append(time.perf_counter() - t)
            hits.append([int(f.external_image_id or -1) for f, _ in res])
        return lat, hits

    def summary(lat: list[float]) -> dict:
        return {"p50_ms": statistics.median(lat) * 1000, "p99_ms": float(np.percentile(lat, 99)) * 1000}

    def run() -> tuple[dict, list[list[int]]]:
        lat, hits = timed()
        return summary(lat), hits

    if do_diagnose and ivf is not None:
        faiss.omp_set_num_threads(1)
        rows = dict(store._reader().execute(
            "SELECT CAST(i.external_image_id AS INTEGER), f.vid FROM faces f JOIN images i USING (image_id)"))
        exact_rows = np.load(folder / "exact_top.npy")
        out["diagnosis"] = diagnose(store, probes, np.vectorize(rows.__getitem__)(exact_rows).astype(np.int64))

    # 1 and 2 threads in alternating rounds, so that a slow spell of this shared machine falls on both
    lats: dict[int, list[float]] = {1: [], 2: []}
    rounds: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(ROUNDS):
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            lat, out[f"hits_{threads}t"] = timed()
            lats[threads] += lat
            rounds[threads].append(statistics.median(lat) * 1000)
    for threads in (1, 2):
        out[f"latency_{threads}t"] = {**summary(lats[threads]), "p50_ms_per_round": rounds[threads]}
    out["sweep"] = []
    if ivf is not None:
        faiss.omp_set_num_threads(1)
        saved = {name: getattr(coll, name) for name in ("NPROBE_SHARE", "LIST_NPROBE_SHARE")}
        for nprobe in nprobes:  # every search probes nprobe lists: both shares set to nlist / nprobe
            coll.NPROBE_SHARE = coll.LIST_NPROBE_SHARE = max(1, ivf.nlist // nprobe)
            latency, hits = run()
            out["sweep"].append({"nprobe": ivf.nlist // coll.NPROBE_SHARE, "latency": latency, "hits": hits})
        for name, value in saved.items():
            setattr(coll, name, value)
    out["variants"] = []
    if variants and ivf is not None:
        todo = [("current", {})] + _parse_variants(variants)
        names = {n for _, v in todo for n in v}
        default = {n: getattr(coll, n) for n in names}
        res = {name: {(t, k): [] for t in variant_threads for k in (1, 10)} for name, _ in todo}
        hits_of: dict = {}
        for _ in range(VARIANT_ROUNDS):  # every variant in every round, so that the machine's drift falls on all
            for threads in variant_threads:
                faiss.omp_set_num_threads(threads)
                for name, settings in todo:
                    for n, v in {**default, **settings}.items():
                        setattr(coll, n, v)
                    for k in (1, 10):
                        lat, hits_of[name, k] = timed(k)
                        res[name][threads, k].append(lat)
        for n, v in default.items():
            setattr(coll, n, v)
        for name, settings in todo:
            row: dict = {"name": name, "settings": settings, "hits_k1": hits_of[name, 1],
                         "hits_k10": hits_of[name, 10]}
            for (threads, k), per_round in res[name].items():
                row[f"k{k}_{threads}t"] = {**summary([x for r in per_round for x in r]),
                                           "p50_ms_per_round": [statistics.median(r) * 1000 for r in per_round]}
            out["variants"].append(row)
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
    ap.add_argument("--nprobes", type=int, nargs="*", default=[], help="also search with these nprobe values")
    ap.add_argument("--keep", type=Path, help="build the collections under this folder and keep them")
    ap.add_argument("--tag", default="", help="suffix of the results file")
    ap.add_argument("--reuse", action="store_true", help="search the collections kept under --keep instead of "
                    "building them again")
    ap.add_argument("--variants", nargs="*", default=[], help="also time these settings of the search constants, "
                    "as name:CONST=value,... (e.g. before:LIST_NPROBE_SHARE=2,LIST_CANDIDATES=640)")
    ap.add_argument("--variant-threads", type=int, nargs="+", default=[1, 2], help="FAISS threads the variants are "
                    "timed with")
    ap.add_argument("--diagnose", action="store_true", help="measure where the exact top-10 are lost, stage by stage")
    ap.add_argument("--embeddings", type=Path, help="the LFW embeddings cache to use (default: benchmarks/.cache/"
                    "lfw_facelens_buffalo_s.npz; a partial cache of embed_lfw.py uses the images it has done)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--search", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.search:
        print(json.dumps(search_process(args.search, args.nprobes, args.variants, args.diagnose,
                                        tuple(args.variant_threads))))
        return
    if args.one:
        folder = args.keep / f"bench-{args.one}" if args.keep else None
        print(json.dumps(run_size(args.one, args.queries, folder, args.nprobes, args.reuse, args.variants,
                                  args.diagnose, args.embeddings, args.variant_threads)))
        return
    results = []
    for size in args.sizes:
        print(f"size {size:,} ...", file=sys.stderr)
        cmd = [sys.executable, __file__, "--one", str(size), "--queries", str(args.queries),
               "--nprobes", *map(str, args.nprobes)] + (["--keep", str(args.keep)] if args.keep else []) + (
               ["--reuse"] if args.reuse else []) + ["--variants", *args.variants] + (
               ["--diagnose"] if args.diagnose else []) + (
               ["--embeddings", str(args.embeddings)] if args.embeddings else []) + [
               "--variant-threads", *map(str, args.variant_threads)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1], indent=1), file=sys.stderr)
    out = ROOT / "benchmarks" / "results" / f"search{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print("| faces | index | nprobe | p50 1t (ms) | p99 1t | p50 2t | p99 2t | recall@1 | recall@1 of matches | "
          "recall@10 | rank-1 true mate (exact) | numpy scan p50 | numpy/facelens | open (s) | peak RSS (GB) | "
          "disk (GB) |")
    print("|---" * 16 + "|")
    for r in results:
        a, b = r["facelens_1t"], r["facelens_2t"]
        numpy_p50 = f"{r['numpy_scan']['p50_ms']:.1f}" if "numpy_scan" in r else "-"
        ratio = f"{r['ratio_numpy_over_facelens_1t_p50']:.0f}x" if "numpy_scan" in r else "-"
        print(f"| {r['size']:,} | {r['index']} | {r['nprobe']} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} | "
              f"{b['p50_ms']:.1f} | {b['p99_ms']:.1f} | {a['recall_at_1']:.3f} | {a['recall_at_1_of_matches']:.3f} | "
              f"{a['recall_at_10']:.3f} | "
              f"{a['rank1_true_mate']:.3f} ({r['exact_rank1_true_mate']:.3f}) | {numpy_p50} | {ratio} | "
              f"{r['open_s']} | {r['peak_rss_gb']:.2f} | {r['disk_gb']:.1f} |")
        for row in r["nprobe_sweep"]:
            print(f"|   | nprobe {row['nprobe']} | | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | | | "
                  f"{row['recall_at_1']:.3f} | {row['recall_at_1_of_matches']:.3f} | {row['recall_at_10']:.3f} | "
                  f"{row['rank1_true_mate']:.3f} | | | | | |")
    for r in results:
        if not r.get("variants"):
            continue
        print(f"\n{r['size']:,} faces, settings timed in {VARIANT_ROUNDS} alternating rounds (latencies pooled):\n")
        print("| variant | settings | k=1 p50 / p99 1t (ms) | 2t | recall@1 (k=1) | k=10 p50 / p99 1t (ms) | 2t | "
              "recall@10 (k=10) | recall@1 (k=10) |")
        print("|---" * 9 + "|")

        def lat(v: dict, key: str) -> str:
            return f"{v[key]['p50_ms']:.1f} / {v[key]['p99_ms']:.1f}" if key in v else "-"

        for v in r["variants"]:
            settings = ", ".join(f"{k}={x}" for k, x in v["settings"].items()) or "as committed"
            print(f"| {v['name']} | {settings} | {lat(v, 'k1_1t')} | {lat(v, 'k1_2t')} | "
                  f"{v['k1']['recall_at_1']:.3f} | "
                  f"{lat(v, 'k10_1t')} | {lat(v, 'k10_2t')} | {v['k10']['recall_at_10']:.3f} | "
                  f"{v['k10']['recall_at_1']:.3f} |")


if __name__ == "__main__":
    main()
