"""What collection lifetime and erasure cost: the checks every operation makes, the time to open a
collection (whose exact index is rebuilt from SQLite, never saved), and an erasure's extra work.

    python benchmarks/bench_lifetime.py [--faces 99000] [--repeats 5]

Synthetic unit-length 512-d embeddings (no images, no models), stored through FaceStore in a fresh
folder under the system's temporary folder. Reports, with the median of ``--repeats`` runs:
- ``is_current``: the identity check before every read (one stat() of the database file);
- ``tombstone``: the check inside every write transaction (one primary-key lookup);
- ``checked_empty_transaction``: BEGIN IMMEDIATE, both checks, COMMIT of nothing (no fsync);
- ``open``: FaceStore.open of ``--faces`` faces (exact index: read every embedding from SQLite), with
  the database in the OS page cache;
- ``erase_one``: delete_faces of one face (commit, index update, fsync of the re-rank rows, WAL
  truncation); with ``--ivf``, also for the approximate index that ``--faces`` >= 100k gets, which
  saves its index file again.
Results: benchmarks/results/lifetime.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT  # noqa: E402
from facelens.store import FaceRecord, FaceStore  # noqa: E402
from facelens.store.collection import _tombstoned  # noqa: E402


def _fill(store: FaceStore, n: int, start: int, rng: np.random.Generator) -> None:
    for lo in range(start, start + n, 5000):
        x = rng.normal(size=(min(5000, start + n - lo), 512)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        store.add_images([(f"img-{lo + i}", f"{lo + i}", None, [FaceRecord((0, 0, 1, 1), 1.0, {}, x[i])])
                          for i in range(len(x))])


def _per_call(fn: Any, calls: int, repeats: int) -> float:
    """Median seconds per call."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)



def _median_erase_ms(store: FaceStore, repeats: int) -> float:
    """Median milliseconds of erasing one face (delete_faces of a single id), over ``repeats`` faces."""
    erase = []
    for f in store.list_faces(limit=repeats)[0]:
        t0 = time.perf_counter()
        store.delete_faces([f.face_id])
        erase.append(time.perf_counter() - t0)
    return round(1e3 * statistics.median(erase), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=99_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ivf", action="store_true", help="also grow past 100k faces and time an IVF erasure")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="facelens-lifetime-"))
    out: dict[str, Any] = {"faces": args.faces, "repeats": args.repeats}
    try:
        path = folder / "c"
        store = FaceStore.create(path, name="c", model_name="m", model_sha256="-", dim=512)
        t0 = time.perf_counter()
        _fill(store, args.faces, 0, rng)
        out["fill_s"] = round(time.perf_counter() - t0, 1)
        out["is_current_us"] = round(1e6 * _per_call(store.is_current, 20_000, args.repeats), 2)
        conn = store._reader()
        out["tombstone_us"] = round(1e6 * _per_call(lambda: _tombstoned(conn), 20_000, args.repeats), 2)
        empty = _per_call(lambda: store._write(lambda c: None), 50, args.repeats)
        out["checked_empty_transaction_ms"] = round(1e3 * empty, 3)
        store.close()
        opens = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            store = FaceStore.open(path, name="c")
            opens.append(time.perf_counter() - t0)
            store.close()
        out["open_s"] = round(statistics.median(opens), 3)
        out["open_index"] = "IDMap2,Flat"
        store = FaceStore.open(path, name="c")
        out["erase_one_ms"] = _median_erase_ms(store, args.repeats)
        if args.ivf:
            _fill(store, 100_000 - store.face_count() + 1000, args.faces + 10, rng)
            out["ivf_index"] = store.index_factory
            out["ivf_faces"] = store.face_count()
            out["ivf_erase_one_ms"] = _median_erase_ms(store, args.repeats)
            store.close()
            t0 = time.perf_counter()
            FaceStore.open(path, name="c").close()
            out["ivf_open_s"] = round(time.perf_counter() - t0, 3)
        else:
            store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(out, indent=2))
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / "lifetime.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
