"""Fill the audit's embedding cache for a model: the sets of ../shared/data, ``--workers`` images at a time.

    nice -n 19 python benchmarks/embed_sets.py --model sface --workers 4 lfw congress-past congress-historical

The same cache (``<home>/cache/embeddings-<model>.npz``), keys and settings as benchmarks/calib_data.py
and ``facelens audit`` use, so build_calibration.py and the audit then read every image from it; run
from the project root (the keys hold the paths as ``<root>/../shared/data/...``). Only more workers
than calib_data's two: a niced job on a shared machine gets its share per thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facelens  # noqa: E402
from benchmarks.calib_data import DATA  # noqa: E402
from facelens.audit.dataset import embed_dataset, read_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", help="folders of ../shared/data (lfw, congress-past, ...)")
    ap.add_argument("--model", default="buffalo_s")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    engine = facelens.Engine(model=args.model, threads=1)
    cache = engine.home / "cache" / f"embeddings-{engine.model_name}.npz"
    cache.parent.mkdir(parents=True, exist_ok=True)
    for name in args.sets:
        t = time.time()
        out = embed_dataset(engine, read_dataset(DATA / name), workers=args.workers, cache=cache)
        print(f"# {name}: {len(out):,} images, {int(out.found.sum()):,} with a face ({time.time() - t:.0f} s)",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
