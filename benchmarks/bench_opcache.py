"""Issue 14: what the operating-point cache saves a search (the calibration's threshold reading, memoised
per (rate, policy) on the profile).

Run: ``PYTHONPATH=$PWD python -m benchmarks.bench_opcache`` (a small collection of the test portraits; 50
searches by embedding with the memo cleared before each, then 50 with it kept, in the same run; and the
per-call cost of the threshold reading, fresh and memoised)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import facelens

PORTRAITS = Path(__file__).resolve().parents[1] / "examples" / "portraits"


def _ms(f: object, n: int) -> float:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()  # type: ignore[operator]
        out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out)


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        eng = facelens.Engine(home=home, threads=2)
        eng.create_collection("c")
        faces = sorted(PORTRAITS.glob("*.jpg"))
        for p in faces:
            eng.index_faces("c", p, external_image_id=p.stem)
        rng = np.random.default_rng(0)
        q = rng.standard_normal(eng.embedding_size).astype(np.float32)
        q /= np.linalg.norm(q)
        cal = eng.collection_calibration("c")
        eng.search_faces_by_embedding("c", q)  # warm (models, store, index)

        def fresh() -> None:
            cal.clear_cache()
            eng.search_faces_by_embedding("c", q)

        before = _ms(fresh, 50)
        after = _ms(lambda: eng.search_faces_by_embedding("c", q), 50)
        size = eng.describe_collection("c").face_count
        fmr = facelens.calibration.table.fpir_to_fmr(eng.config.max_fpir, size)
        compute = _ms(lambda: cal.compute_threshold(fmr, eng.policy), 20)
        cached = _ms(lambda: cal.threshold_detail(fmr, eng.policy), 200)
        print(f"{len(faces)} faces, policy {eng.policy}, max_fpir {eng.config.max_fpir} -> max_fmr {fmr:.3g}")
        print(f"search by embedding, median of 50: uncached {before:.2f} ms, cached {after:.2f} ms")
        print(f"threshold reading per call: computed {compute:.2f} ms, memoised {cached * 1e3:.1f} us")
        eng.close()


if __name__ == "__main__":
    main()
