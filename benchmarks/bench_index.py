"""Indexing throughput, end to end from JPEG files, as a user runs it.

    python benchmarks/bench_index.py [--images 2000] [--workers 1 2]

Runs `facelens index` (the CLI, in a fresh process and a fresh home folder) on the first N images of
LFW (250x250 JPEGs), once per worker count, and reports images per second over the whole command
(process start and model loading included), and the load average before and after (a shared machine).
The `facelens` it runs is the one on PYTHONPATH, so an older tree can be measured in the same session.
Results: benchmarks/results/index.json (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DEFAULT_LFW, ROOT, lfw_images  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "index.json")
    args = ap.parse_args()
    files = [str(args.lfw / "images" / p) for p in lfw_images(args.lfw)[: args.images]]
    results = []
    for workers in args.workers:
        home = Path(tempfile.mkdtemp(prefix="facelens-index-"))
        try:
            env = {**os.environ, "FACELENS_HOME": str(home)}
            cli = [sys.executable, "-m", "facelens"]
            subprocess.run([*cli, "collection", "create", "bench"], env=env, check=True, capture_output=True)
            t0 = time.perf_counter()
            proc = subprocess.run([*cli, "index", "bench", *files, "--workers", str(workers), "--json"], env=env,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t0
            summary = json.loads(proc.stdout)["summary"]
        finally:
            shutil.rmtree(home, ignore_errors=True)
        results.append({"workers": workers, "images": len(files), "seconds": round(wall, 1),
                        "load_average_after": os.getloadavg(),
                        "images_per_second": round(len(files) / wall, 1), "summary": summary})
        print(json.dumps(results[-1]), file=sys.stderr)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print("| workers | images | seconds | images/s | faces indexed | refused |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['workers']} | {r['images']} | {r['seconds']} | {r['images_per_second']} | "
              f"{r['summary']['faces_indexed']} | {r['summary']['faces_refused']} |")


if __name__ == "__main__":
    main()
