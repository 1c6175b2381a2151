"""What the HTTP service adds to a search by image: HTTP latency minus the engine's own time, same run.

    python benchmarks/bench_http_overhead.py --home DIR --collection NAME [--requests 100] [--rounds 3] \
        [--variant LABEL=ROOT[:SERVE ARGS]]... [--clients 16 --duration 15]

Each --variant is a `facelens serve` started from the source tree ROOT (its own PYTHONPATH) with the
extra serve arguments after ':' (comma-separated), e.g. ``base=/work/main`` and
``new=.:--http,httptools``; the default is this tree with its default options. ``LABEL=ROOT:granian``
runs the same app (``app_from_environment``, the same settings) under granian instead of uvicorn.
Every server is started once, with a temporary admin key (revoked at the end), ``--threads 1
--rate-limit 0 --no-access-log`` and the collection's purpose optional.

One client (httpx, keep-alive) then posts the same multipart search by image (the probes in turn,
``max_results`` 10) --requests times per variant and round; between them, this process searches the
same probes with an Engine on the same home (``threads=1``, the actor and purpose recorded in the same
signed log, as the service does): the engine's own time. Rounds alternate the variants and the engine
each HTTP search is followed at once by the engine's search of the same probe, so that a load that
changes on a shared machine touches both alike. Reported per variant: median HTTP latency, the engine's
median, and the median of the paired differences (the service overhead), overall and per round. On a
loaded machine the wall-clock difference is noise (both wait for a core); the CPU time is not: the
service process's CPU per request (all its threads, from /proc/PID/task/*/schedstat, read before the
request and after the engine's search, so the request's tail counts) minus the engine's CPU for the
same search (this process, while its client is idle) is reported as ``overhead_cpu_ms``.

With --clients N, each variant is then loaded by N client threads of a separate process for --duration
seconds (closed loop), and the engine alone by as many threads as the service has workers (one per
core), each searching in a loop: searches/s of both and their ratio. The Python clients themselves take
part of the cores (about a third of two, see BENCHMARKS.md), which counts against the service.
Results: JSON on stdout and in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_service import PORTRAITS, _free_port, _images  # noqa: E402

PURPOSE = "bench_http_overhead"
#: identify at a per-comparison rate: the default (max_fpir) has no threshold on a 100k synthetic gallery
FIELDS = {"max_results": "10", "max_fmr": "1e-5"}


def start_server(root: Path, extra: list[str], home: Path, collection: str, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "facelens", "serve", "--home", str(home), "--port", str(port), "--threads", "1",
           "--rate-limit", "0", "--no-access-log", "--purpose-optional", collection, "--request-timeout", "300",
           *extra]
    env = {**os.environ, "PYTHONPATH": str(root)}
    if extra[:1] == ["granian"]:  # the same app and settings under granian (Rust HTTP server), one process
        from facelens.server.settings import SETTINGS_ENV, ServerSettings

        settings = ServerSettings(home=home, port=port, engine_threads=1, workers=os.cpu_count() or 1,
                                  rate_limit=0, request_timeout_s=300, purpose_overrides={collection: "optional"})
        env[SETTINGS_ENV] = settings.to_json()
        cmd = [str(Path(sys.executable).parent / "granian"), "--interface", "asgi", "--factory", "--host",
               "127.0.0.1", "--port", str(port), "--workers", "1", "--no-ws", "--loop", "uvloop",
               "--http1-header-read-timeout", "10000", "--log-level", "warning", *extra[1:],
               "facelens.server.app:app_from_environment"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd}: exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"{cmd}: did not start in time")


def cpu_ms(pid: int | str = "self") -> float:
    """CPU time of every thread of process ``pid`` and of its child processes (granian's workers) so far,
    in ms (the scheduler's own count, in ns)."""
    total = 0.0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:  # a process that just ended
        return 0.0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e6
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(cpu_ms(child) for child in f.read().split())
        except FileNotFoundError:  # a thread that just ended
            pass
    return total


def http_round(client: httpx.Client, path: str, probes: list[Any], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        probe = probes[i % len(probes)]
        if isinstance(probe, str):  # a face id: search by stored face
            r = client.post(path.replace("/image", "/face"), json={"face_id": probe, "max_results": 10,
                                                                    "max_fmr": 1e-5})
        else:
            r = client.post(path, files={"image": probe}, data=FIELDS)
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            raise SystemExit(f"search failed: {r.status_code} {r.text[:300]}")
        out.append(dt * 1000)
    return out


def engine_round(engine: Any, collection: str, probes: list[Any], n: int, actor: Any) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        probe = probes[i % len(probes)]
        search = engine.search_faces if isinstance(probe, str) else engine.search_faces_by_image
        search(collection, probe, max_results=10, max_fmr=1e-5, actor=actor, purpose=PURPOSE)
        out.append((time.perf_counter() - t0) * 1000)
    return out


_LOAD = r"""
import sys, threading, time, httpx
url, token, path, clients, duration = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
face_ids = sys.argv[6].startswith("face:")
probes = [p[5:] if face_ids else open(p, "rb").read() for p in sys.argv[6:]]
done, errors, lock, stop = [0], [0], threading.Lock(), threading.Event()
cs = [httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300) for _ in range(clients)]
def run(i):
    n = i
    while not stop.is_set():
        try:
            p = probes[n % len(probes)]
            if face_ids:
                r = cs[i].post(path.replace("/image", "/face"), json={"face_id": p, "max_results": 10, "max_fmr": 1e-5})
            else:
                r = cs[i].post(path, files={"image": p}, data={"max_results": "10", "max_fmr": "1e-5"})
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        with lock:
            (done if ok else errors)[0] += 1
        n += 1
ts = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
[t.start() for t in ts]; time.sleep(2); done[0] = errors[0] = 0; t0 = time.perf_counter(); time.sleep(duration)
n, e = done[0], errors[0]; el = time.perf_counter() - t0; stop.set(); [t.join() for t in ts]
print(n / el, e)
"""


def engine_throughput(engine: Any, collection: str, probes: list[Any], threads: int, duration: float,
                      actor: Any) -> float:
    stop = threading.Event()
    counts = [0] * threads

    def run(i: int) -> None:
        n = i
        while not stop.is_set():
            engine_round(engine, collection, [probes[n % len(probes)]], 1, actor)
            counts[i] += 1
            n += 1

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    time.sleep(2)
    start = sum(counts)
    t0 = time.perf_counter()
    time.sleep(duration)
    n = sum(counts) - start
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in ts:
        t.join()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--collection", default="bench")
    ap.add_argument("--probes", default=None, help="Folder or glob of probes (default: the portraits' second photos).")
    ap.add_argument("--variant", action="append", default=[], help="LABEL=ROOT[:SERVE,ARGS] (repeatable).")
    ap.add_argument("--mode", choices=["image", "face"], default="image", help="image: multipart upload (detect, "
                    "embed, search); face: search by a stored face id (JSON; the vector search and the log alone).")
    ap.add_argument("--requests", type=int, default=100, help="Sequential searches per variant and round.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=0, help="Also a closed-loop load of N clients (0: none).")
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "http_overhead.json")
    args = ap.parse_args()

    from facelens.accountability.actor import Actor
    from facelens.engine import Engine
    from facelens.server.keys import KeyStore

    probe_paths = _images(args.probes, sorted(PORTRAITS.glob("*_b.jpg")))
    probes = [p.read_bytes() for p in probe_paths]
    variants: list[tuple[str, Path, list[str]]] = []
    for spec in args.variant or [f"this={ROOT}"]:
        label, _, rest = spec.partition("=")
        root, _, extra = rest.partition(":")
        variants.append((label, Path(root).resolve(), [a for a in extra.split(",") if a]))
    store = KeyStore.open(args.home)
    key = store.create(name=f"bench_http_overhead {time.strftime('%H:%M:%S')}", admin=True)
    store.close()
    procs: list[subprocess.Popen[bytes]] = []
    clients: dict[str, httpx.Client] = {}
    urls: dict[str, str] = {}
    path = f"/v1/collections/{args.collection}/search/image"
    result: dict[str, Any] = {"benchmark": "bench_http_overhead", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                          "load_before": os.getloadavg()},
                              "requests": args.requests, "rounds": args.rounds, "probes": len(probes)}
    try:
        for label, root, extra in variants:
            port = _free_port()
            procs.append(start_server(root, extra, args.home, args.collection, port))
            urls[label] = f"http://127.0.0.1:{port}"
            clients[label] = httpx.Client(base_url=urls[label], timeout=300,
                                          headers={"Authorization": f"Bearer {key.token}"})
        engine = Engine(home=str(args.home), threads=1)
        actor = Actor.for_key(key.key.key_id, "bench_http_overhead engine")
        if args.mode == "face":
            probes = [f.face_id for f in engine.list_faces(args.collection, limit=len(probes))[0]]
        result["mode"] = args.mode
        for label in clients:  # warm-up: models, page cache, connections
            http_round(clients[label], path, probes, 10)
        engine_round(engine, args.collection, probes, 10, actor)
        # paired: each HTTP search is followed by the engine's own search of the same probe, so that a load
        # that changes on a shared machine touches both alike; the overhead is the median of the differences
        lat: dict[str, list[float]] = {label: [] for label in [*clients, "engine"]}
        diffs: dict[str, list[float]] = {label: [] for label in clients}
        cpu: dict[str, list[float]] = {label: [] for label in [*clients, "engine"]}
        pids = dict(zip(clients, (p.pid for p in procs), strict=True))
        for _ in range(args.rounds):
            for i in range(args.requests):
                for label, client in clients.items():
                    c0 = cpu_ms(pids[label])
                    h = http_round(client, path, [probes[i % len(probes)]], 1)[0]
                    e0 = cpu_ms()
                    e = engine_round(engine, args.collection, [probes[i % len(probes)]], 1, actor)[0]
                    cpu["engine"].append(cpu_ms() - e0)
                    cpu[label].append(cpu_ms(pids[label]) - c0)  # after the engine ran: the request's tail too
                    lat[label].append(h)
                    lat["engine"].append(e)
                    diffs[label].append(h - e)
        med = statistics.median
        result["engine_ms_p50"] = round(med(lat["engine"]), 2)
        result["engine_cpu_ms_p50"] = round(med(cpu["engine"]), 2)
        result["variants"] = {}
        for label, _root, extra in variants:
            rounds = [diffs[label][r * args.requests:(r + 1) * args.requests] for r in range(args.rounds)]
            result["variants"][label] = {
                "serve_args": extra, "http_ms_p50": round(med(lat[label]), 2),
                "overhead_ms": round(med(diffs[label]), 2),
                "overhead_ms_by_round": [round(med(r), 2) for r in rounds],
                "service_cpu_ms_p50": round(med(cpu[label]), 2),
                "overhead_cpu_ms": round(med(cpu[label]) - med(cpu["engine"]), 2)}
        if args.clients:
            eng = engine_throughput(engine, args.collection, probes, os.cpu_count() or 1, args.duration, actor)
            result["engine_searches_per_s"] = round(eng, 1)
            load_probes = [f"face:{p}" for p in probes] if args.mode == "face" else [str(p) for p in probe_paths]
            for label in clients:
                out = subprocess.run([sys.executable, "-c", _LOAD, urls[label], key.token, path, str(args.clients),
                                      str(args.duration), *load_probes], capture_output=True, text=True,
                                     check=True).stdout.split()
                rate, errors = float(out[0]), int(out[1])
                result["variants"][label].update(clients=args.clients, searches_per_s=round(rate, 1), errors=errors,
                                                 of_engine=round(rate / eng, 2) if eng else None)
        engine.close()
    finally:
        for c in clients.values():
            c.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        store = KeyStore.open(args.home)
        store.revoke(key.key.key_id)
        store.close()
    result["machine"]["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
