"""Per-append cost of the signed log: SQLite file vs PostgreSQL (a throwaway local cluster, as the tests use).

    PYTHONPATH=. python benchmarks/bench_log_append.py [--appends 1000]

Both durable as in production: SQLite synchronous=FULL (WAL), PostgreSQL synchronous_commit=on with fsync on.
Each append: read the head, build and sign (Ed25519) the entry, insert it and the head in one transaction.
Prints the median and p95 in ms, and the cluster's start-up time. Run on an idle machine for numbers to quote.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facelens.accountability.log import LogSigningKey, SearchLog  # noqa: E402
from tests._postgres import PostgresCluster, pg_bin_dir  # noqa: E402


def _time(log: SearchLog, n: int) -> list[float]:
    record = {"action": "search_faces", "collection": "bench", "purpose": "case 1", "results": [
        {"candidates": [{"face_id": "f" * 32, "person_id": "p", "score": 0.5, "fmr": 1e-6}]}]}
    times = []
    for _ in range(n):
        t = time.perf_counter()
        log.append(record)
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--appends", type=int, default=1000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-log-"))
    key = LogSigningKey.load_or_create(folder / "log-signing.key")
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise SystemExit("no initdb/pg_ctl (Debian: apt-get install postgresql)")
    cluster = PostgresCluster(bin_dir)
    try:
        print(f"PostgreSQL cluster started in {cluster.start_seconds:.2f} s (initdb + pg_ctl start)")
        for name, location in (("sqlite", folder / "search-log.sqlite"), ("postgresql", cluster.create_database())):
            log = SearchLog(location, signing_key=key)
            try:
                _time(log, 20)  # warm up
                times = sorted(_time(log, args.appends))
            finally:
                log.close()
            p95 = times[int(0.95 * len(times)) - 1]
            print(f"{name:10s} {args.appends} appends: median {statistics.median(times):.3f} ms, p95 {p95:.3f} ms")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
