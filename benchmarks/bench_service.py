"""Load test of the HTTP service: N clients searching over loopback while another client indexes.

    python benchmarks/bench_service.py                                  # a small collection of the portraits
    python benchmarks/bench_service.py --collection-home DIR --collection NAME --probes DIR [--clients 16]

Starts `facelens serve` in its own process on 127.0.0.1 (so the clients' Python does not share its
GIL), with a temporary admin key that is revoked at the end. Without --collection-home, a collection of
the first photo of each bundled portrait is built in a temporary home. Each of --clients threads posts
multipart searches (`POST /v1/collections/NAME/search/image`, the probes in turn) as fast as it can,
while one more thread indexes --index-images under fresh external ids into the same collection (so
searches and writes meet on the same store); the faces it added are deleted at the end (--keep-indexed
keeps them). After a warm-up, --repeats runs of --duration seconds each are measured.

With --rate R the load is open loop instead: the clients together offer R searches per second on a
fixed schedule, and a search's latency counts from when it was due (so a queue is not hidden by
clients that wait for it); this finds the load at which a latency target holds.

Reports searches/s, search latency p50/p90/p99 (ms, client side, including upload and JSON), errors
(non-200 answers and transport failures), and the indexing rate, as JSON to
benchmarks/results/service.json (--out). The searches are written to the home's search log like any
others (purpose "bench_service load test"); the collection's purpose is made optional only for them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PORTRAITS = ROOT / "examples" / "portraits"
PURPOSE = "bench_service load test"


def _images(spec: str | None, default: list[Path]) -> list[Path]:
    if spec is None:
        return default
    p = Path(spec)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    return sorted(Path().glob(spec))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def build_small_collection(home: Path, name: str) -> None:
    from facelens.engine import Engine

    with Engine(home=str(home)) as engine:
        engine.create_collection(name)
        for p in sorted(PORTRAITS.glob("*_a.jpg")):
            engine.index_faces(name, str(p), external_image_id=p.name, person_id=p.stem.rsplit("_", 1)[0])


def start_server(home: Path, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "facelens", "serve", "--home", str(home), "--port", str(port),
           "--threads", str(args.threads), "--rate-limit", "0", "--no-access-log",
           "--purpose-optional", args.collection, "--request-timeout", "300"]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the service did not start in time")


def run_once(url: str, token: str, args: argparse.Namespace, probes: list[bytes], index_images: list[bytes],
             duration: float, added: list[str], face_ids: list[str] | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    stop = threading.Event()
    latencies: list[float] = []
    index_latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    search_path = f"/v1/collections/{args.collection}/search/image"

    # made before the clock starts: building an httpx client (its SSL context) takes ~50 ms of CPU, and
    # 16 at once held the first searches of an open-loop run up by ~0.7 s
    clients = [httpx.Client(base_url=url, headers=headers, timeout=300) for _ in range(args.clients)]
    start = threading.Barrier(args.clients + 1)

    def searcher(i: int) -> None:
        # --rate: open loop, each client sends at its share of the rate (offsets spread the clients) and
        # latency counts from when the request was due, so a queue that builds up is not hidden.
        interval = args.clients / args.rate if args.rate else 0.0
        start.wait()
        due = time.perf_counter() + interval * i / args.clients
        with clients[i] as client:
            n = i
            while not stop.is_set():
                if interval:
                    wait = due - time.perf_counter()
                    if wait > 0 and stop.wait(wait):
                        break
                t0 = due if interval else time.perf_counter()
                due += interval
                try:
                    if args.mode == "health":  # the floor: HTTP and these clients, no work behind it
                        r = client.get("/health")
                    elif face_ids:  # --mode face: the vector search alone, no models
                        r = client.post(f"/v1/collections/{args.collection}/search/face",
                                        json={"face_id": face_ids[n % len(face_ids)], "purpose": PURPOSE,
                                              "max_results": args.max_results})
                    else:
                        r = client.post(search_path, files={"image": probes[n % len(probes)]},
                                        data={"purpose": PURPOSE, "max_results": str(args.max_results)})
                    ok, err = r.status_code == 200, f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, err = False, repr(exc)
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        latencies.append(dt)
                    else:
                        errors.append(err)
                n += 1

    def indexer() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
            n = 0
            while not stop.is_set() and index_images:
                t0 = time.perf_counter()
                try:
                    r = client.post(f"/v1/collections/{args.collection}/faces",
                                    files={"image": index_images[n % len(index_images)]},
                                    data={"external_image_id": f"bench-{uuid.uuid4()}"})
                    ok, err = r.status_code == 200, f"index {r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, err = False, f"index {exc!r}"
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        index_latencies.append(dt)
                        added.extend(f["face_id"] for f in r.json()["indexed"])
                    else:
                        errors.append(err)
                n += 1

    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(args.clients)]
    if not args.no_index:
        threads.append(threading.Thread(target=indexer))
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0  # includes the requests in flight when told to stop
    ms = [v * 1000 for v in latencies]
    return {
        "seconds": round(elapsed, 2), "searches": len(latencies), "searches_per_s": round(len(latencies) / elapsed, 2),
        "search_ms": {"p50": _round(_percentile(ms, 50)), "p90": _round(_percentile(ms, 90)),
                      "p99": _round(_percentile(ms, 99)), "mean": _round(statistics.fmean(ms) if ms else None)},
        "indexed_images": len(index_latencies), "index_per_s": round(len(index_latencies) / elapsed, 2),
        "index_ms_p50": _round(_percentile([v * 1000 for v in index_latencies], 50)),
        "errors": len(errors), "error_examples": errors[:5],
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection-home", type=Path, help="Home folder of an existing collection (default: build "
                    "a small one from examples/portraits in a temporary folder).")
    ap.add_argument("--collection", default="bench", help="Collection to search (default: bench).")
    ap.add_argument("--probes", default=None, help="Folder or glob of probe images (default: the portraits' "
                    "second photos).")
    ap.add_argument("--index-images", default=None, help="Folder or glob of images the indexing client adds "
                    "(default: the portraits' second photos).")
    ap.add_argument("--no-index", action="store_true", help="No indexing client: searches only.")
    ap.add_argument("--keep-indexed", action="store_true", help="Keep the faces the indexing client added.")
    ap.add_argument("--clients", type=int, default=16, help="Concurrent searching clients (default 16).")
    ap.add_argument("--duration", type=float, default=20.0, help="Seconds per measured run (default 20).")
    ap.add_argument("--warmup", type=float, default=5.0, help="Seconds of unmeasured load first (default 5).")
    ap.add_argument("--repeats", type=int, default=1, help="Measured runs (default 1).")
    ap.add_argument("--max-results", type=int, default=10)
    ap.add_argument("--rate", type=float, default=None, help="Open loop: searches per second offered by all "
                    "clients together, latency counted from when each was due (default: closed loop, each "
                    "client sends its next search as soon as the last returns).")
    ap.add_argument("--mode", choices=["image", "face", "health"], default="image", help="image: upload a photo "
                    "(detect + embed + search); face: search with a stored face id (the vector search and the log "
                    "alone); health: GET /health, the floor that HTTP and the clients set on this machine.")
    ap.add_argument("--workers", type=int, default=None, help="Service --workers (default: one per core).")
    ap.add_argument("--threads", type=int, default=1, help="Service --threads (default 1).")
    ap.add_argument("--start-timeout", type=float, default=600.0, help="Seconds to wait for the service to "
                    "start (opening a 1M-face collection takes a while).")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service.json")
    args = ap.parse_args()

    second_photos = sorted(PORTRAITS.glob("*_b.jpg"))
    probes = [p.read_bytes() for p in _images(args.probes, second_photos)]
    index_images = [p.read_bytes() for p in _images(args.index_images, second_photos)]
    if not probes:
        raise SystemExit("no probe images")

    from facelens.server.keys import KeyStore

    tmp: Path | None = None
    if args.collection_home is None:
        tmp = Path(tempfile.mkdtemp(prefix="facelens-bench-service-"))
        home = tmp
        build_small_collection(home, args.collection)
    else:
        home = args.collection_home
    store = KeyStore.open(home)
    key = store.create(name=f"bench_service {time.strftime('%Y-%m-%d %H:%M:%S')}", admin=True)
    store.close()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    added: list[str] = []
    proc = None
    try:
        t_start = time.perf_counter()
        proc = start_server(home, port, args)
        startup_s = time.perf_counter() - t_start
        headers = {"Authorization": f"Bearer {key.token}"}
        info = httpx.get(f"{url}/v1/collections/{args.collection}", headers=headers, timeout=600).json()
        face_ids = None
        if args.mode == "face":
            page = httpx.get(f"{url}/v1/collections/{args.collection}/faces", headers=headers, timeout=600,
                             params={"limit": 1000}).json()
            face_ids = [f["face_id"] for f in page["faces"]]
        if args.warmup > 0:
            run_once(url, key.token, args, probes, index_images, args.warmup, added, face_ids)
        runs = [run_once(url, key.token, args, probes, index_images, args.duration, added, face_ids)
                for _ in range(args.repeats)]
        if added and not args.keep_indexed:
            for start in range(0, len(added), 1000):
                httpx.post(f"{url}/v1/collections/{args.collection}/faces/delete", headers=headers, timeout=600,
                           json={"face_ids": added[start:start + 1000]}).raise_for_status()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)  # graceful: the collection is saved and closed
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        store = KeyStore.open(home)
        store.revoke(key.key.key_id)
        store.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    best = max(runs, key=lambda r: r["searches_per_s"])
    result = {
        "benchmark": "bench_service", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "collection": {"name": args.collection, "faces": info.get("face_count"),
                       "index_factory": info.get("index_factory"), "built_by_benchmark": tmp is not None},
        "service": {"workers": args.workers or os.cpu_count(), "threads": args.threads,
                    "startup_s": round(startup_s, 1)},
        "load": {"mode": args.mode, "search_clients": args.clients, "indexing_clients": 0 if args.no_index else 1,
                 "probes": len(probes), "duration_s": args.duration, "warmup_s": args.warmup, "rate": args.rate,
                 "repeats": args.repeats},
        "runs": runs,
        "summary": {"searches_per_s": best["searches_per_s"], "search_ms_p50": best["search_ms"]["p50"],
                    "search_ms_p99": best["search_ms"]["p99"], "errors": sum(r["errors"] for r in runs),
                    "index_per_s": best["index_per_s"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
