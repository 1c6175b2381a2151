"""Soak benchmark: mixed traffic on a real ``facelens serve --processes 2`` with kill -9s, then an audit of H.

Not part of the test run. It starts ``facelens serve --processes 2 --home H`` on 127.0.0.1 (a free port, a
global admin key made with ``facelens keys create --admin``), creates three collections (``soak-a`` and
``soak-b``, which live all run, and ``soak-churn``, deleted and re-created every ``--churn-every`` seconds),
and for ``--minutes`` runs:

* ``--clients`` client threads, rate-limited (``--pause`` seconds between calls), each doing a mix of: index
  an image (a bundled portrait, or an LFW image from ../shared/data/lfw when present, always slightly
  cropped and re-encoded so that every indexed face has its own embedding) with a person id from a small
  pool; search by image; search by a stored face id; erase a person (DELETE person); delete faces;
* a CLI writer: a loop of ``python -m facelens index NAME IMAGE --person P --json --home H`` subprocesses;
* a churn thread deleting and re-creating ``soak-churn``;
* a killer: every ``--kill-every`` seconds (jittered) a ``kill -9`` of one of: a service worker process,
  the whole serve supervisor with its workers (then restarted on the same port), the CLI writer.

Every acknowledged write is recorded (an index 200 with its face ids; the CLI's ``--json`` output, exit 0),
with the time interval of its request, and so is every acknowledged erasure (person erase 200 with its
``deleted_faces``, face delete 200 with ``deleted``) and collection delete. Right after an index is
acknowledged, the stored float32 embedding of each new face is read from the collection's SQLite file
(read-only), so that its bytes can be looked for later. A request that got no answer (the server was
killed) is retried only where the outcome matters (erase, delete, collection delete/create) and is
otherwise not counted as acknowledged.

At the end, after a graceful stop (SIGTERM) of the service and of the CLI writer, the audit checks:

* ``lost``: an acknowledged face that must be present (no erase, delete or collection delete that could
  have removed it overlaps or follows its request) is missing from ``facelens faces list``; also a face that
  must be alive answered 404 to a search by its id, or came back ``unknown`` from a delete;
* ``not_erased``: a face that must be gone (acknowledged erased or deleted, or its collection deleted after
  it was indexed) is still listed; an erase that left out a face of the person indexed before it began;
* ``leaked_bytes``: an erased face's embedding (its float32 bytes as stored, or their float16 copy, in full
  or an 32-byte fragment) or its face id is found in any file under H (ids are allowed in the search log,
  which records what searches returned);
* ``cross_collection``: a search of X returned a face id acknowledged into another collection, or into a
  generation of X deleted before the search began; ``erased_returned``: a search returned a face whose
  erasure or deletion was acknowledged before the search began;
* ``collection check`` consistent for every collection; ``facelens log verify`` ok; 0 responses 5xx.

Requests overlapping a kill or a concurrent delete can go either way; they are counted as ambiguous, not
judged. Counts and every violation are printed and written to ``benchmarks/results/soak.json``; the exit
status is 1 when anything was found.

    python benchmarks/soak.py --minutes 30
    python benchmarks/soak.py --minutes 3 --kill-every 40 --churn-every 30   # a quick run
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks.fuzz_api import Serve, admin_key, facelens, free_port, image_variant  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "soak.json"
LFW = ROOT.parent / "shared" / "data" / "lfw" / "images"
STABLE = ("soak-a", "soak-b")
CHURN = "soak-churn"
COLLECTIONS = (*STABLE, CHURN)
NO_ANSWER = (httpx.TransportError,)  # connection refused / reset, timeouts: the server was killed or is restarting


@dataclass
class Face:
    """An acknowledged face: where it was indexed, by which request (its time interval), its embedding."""

    face_id: str
    collection: str
    person: str | None
    start: float
    end: float
    via: str
    embedding: bytes | None = None


@dataclass
class Event:
    """A finished erase / face delete / collection delete: its interval and, when answered, what it did."""

    kind: str
    collection: str
    start: float
    end: float
    certain: bool  # answered on the first try (a retry after a lost answer leaves the first try's effect unknown)
    person: str | None = None
    face_ids: tuple[str, ...] = ()
    done: frozenset[str] = frozenset()  # deleted_faces / deleted
    unknown: frozenset[str] = frozenset()


@dataclass
class Search:
    collection: str
    start: float
    end: float
    returned: tuple[str, ...]
    by_face: str | None = None
    status: int = 200


@dataclass
class Ledger:
    """Everything the clients saw, recorded under one lock and judged at the end."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    faces: dict[str, Face] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    searches: list[Search] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    kills: list[dict[str, Any]] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)
    cli_failures: list[str] = field(default_factory=list)

    def status(self, op: str, status: int | str, detail: str = "") -> None:
        with self.lock:
            self.statuses[f"{op} {status}"] += 1
            if isinstance(status, int) and status >= 500:
                self.server_errors.append(f"{op} -> {status}: {detail[:300]}")


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.home = Path(args.home or tempfile.mkdtemp(prefix="soak-home-"))
        self.work = Path(tempfile.mkdtemp(prefix="soak-work-"))  # images for the CLI and the service log: not in H
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        paths = sorted((ROOT / "examples" / "portraits").glob("*.jpg"))
        if LFW.is_dir() and args.lfw_images:
            lfw = sorted(LFW.glob("*/*.jpg"))
            paths += random.Random(0).sample(lfw, min(args.lfw_images, len(lfw)))
        self.images = [p.read_bytes() for p in paths]
        self.token = admin_key(self.home, "soak")
        self.serve = Serve(self.home, port=free_port(), log_path=self.work / "serve.log",
                           extra=["--processes", "2", "--rate-limit", "0", "--request-timeout", "120",
                                  "--graceful-shutdown", "30"])
        self.serve_lock = threading.Lock()  # held while the supervisor is being killed and restarted
        self.cli_proc: subprocess.Popen[str] | None = None
        self.persons = {c: [f"{c}-p{i}" for i in range(args.persons)] for c in COLLECTIONS}

    # ----------------------------------------------------------------------------------- helpers

    def now(self) -> float:
        return time.monotonic() - self.t0

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.serve.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=150)

    def probe(self, rng: random.Random) -> bytes:
        """A search probe: an image, maybe as is, maybe cropped or re-encoded."""
        return image_variant(rng, rng.choice(self.images))

    def read_embeddings(self, collection: str, face_ids: list[str]) -> dict[str, bytes]:
        """The stored float32 embeddings of these faces, read from the collection's SQLite (read-only)."""
        path = self.home / "collections" / collection / "faces.sqlite"
        out: dict[str, bytes] = {}
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                for fid in face_ids:
                    row = conn.execute("SELECT embedding FROM faces WHERE face_id = ?", (fid,)).fetchone()
                    if row is not None:
                        out[fid] = bytes(row[0])
            finally:
                conn.close()
        except sqlite3.Error:
            pass
        return out

    def record_faces(self, collection: str, faces: list[dict[str, Any]], start: float, end: float, via: str) -> None:
        ids = [f["face_id"] for f in faces]
        embeddings = self.read_embeddings(collection, ids)
        with self.ledger.lock:
            for f in faces:
                self.ledger.faces[f["face_id"]] = Face(f["face_id"], collection, f.get("person_id"), start, end, via,
                                                       embeddings.get(f["face_id"]))
            self.ledger.notes["embeddings_captured"] += len(embeddings)
            self.ledger.notes["embeddings_missed"] += len(ids) - len(embeddings)

    def pick_faces(self, rng: random.Random, collection: str, n: int) -> list[Face]:
        with self.ledger.lock:
            gone = {fid for e in self.ledger.events for fid in e.done}
            pool = [f for f in self.ledger.faces.values() if f.collection == collection and f.face_id not in gone]
        return rng.sample(pool[-200:], min(n, len(pool[-200:])))

    def retry_until_answered(self, op: str, send: Any) -> tuple[httpx.Response, bool, float]:
        """Send until the service answers; returns (response, answered on the first try, first start)."""
        first = self.now()
        tries = 0
        while True:
            tries += 1
            try:
                r = send()
                return r, tries == 1, first
            except NO_ANSWER:
                self.ledger.status(op, "no_answer")
                if tries >= 180:
                    raise
                time.sleep(1.0)

    # ----------------------------------------------------------------------------------- client operations

    def op_index(self, c: httpx.Client, rng: random.Random) -> None:
        coll = rng.choice(COLLECTIONS)
        data = _fresh(rng, rng.choice(self.images))  # new bytes each time: every face its own embedding
        form = {"external_image_id": f"soak-{rng.getrandbits(48):012x}"}
        if rng.random() < 0.85:
            form["person_id"] = rng.choice(self.persons[coll])
        start = self.now()
        try:
            r = c.post(f"/v1/collections/{coll}/faces", files={"image": ("x.jpg", data)}, data=form)
        except NO_ANSWER:
            self.ledger.status("index", "no_answer")
            return
        end = self.now()
        self.ledger.status("index", r.status_code, r.text)
        if r.status_code == 200:
            self.record_faces(coll, r.json()["indexed"], start, end, "http")

    def op_search_image(self, c: httpx.Client, rng: random.Random) -> None:
        coll = rng.choice(COLLECTIONS)
        start = self.now()
        try:
            r = c.post(f"/v1/collections/{coll}/search/image", files={"image": ("p.jpg", self.probe(rng))},
                       data={"purpose": "soak", "max_results": "50", "min_score": "0.0"})
        except NO_ANSWER:
            self.ledger.status("search_image", "no_answer")
            return
        end = self.now()
        self.ledger.status("search_image", r.status_code, r.text)
        if r.status_code == 200:
            ids = tuple(m["face_id"] for res in r.json()["results"] for m in res["matches"])
            with self.ledger.lock:
                self.ledger.searches.append(Search(coll, start, end, ids))

    def op_search_face(self, c: httpx.Client, rng: random.Random) -> None:
        coll = rng.choice(COLLECTIONS)
        picked = self.pick_faces(rng, coll, 1)
        if not picked:
            return
        fid = picked[0].face_id
        start = self.now()
        try:
            r = c.post(f"/v1/collections/{coll}/search/face",
                       json={"face_id": fid, "purpose": "soak", "max_results": 50, "min_score": 0.0})
        except NO_ANSWER:
            self.ledger.status("search_face", "no_answer")
            return
        end = self.now()
        self.ledger.status("search_face", r.status_code, r.text)
        code = r.json().get("error", {}).get("code") if r.status_code >= 400 else None
        if r.status_code == 200 or code == "face_not_found":
            ids = tuple(m["face_id"] for m in r.json()["matches"]) if r.status_code == 200 else ()
            with self.ledger.lock:
                self.ledger.searches.append(Search(coll, start, end, ids, by_face=fid, status=r.status_code))

    def op_erase(self, c: httpx.Client, rng: random.Random) -> None:
        coll = rng.choice(COLLECTIONS)
        person = rng.choice(self.persons[coll])
        r, certain, start = self.retry_until_answered(
            "erase", lambda: c.delete(f"/v1/collections/{coll}/persons/{person}"))
        end = self.now()
        self.ledger.status("erase", r.status_code, r.text)
        if r.status_code == 200:
            done = frozenset(r.json()["deleted_faces"])
            with self.ledger.lock:
                self.ledger.events.append(Event("erase", coll, start, end, certain, person=person, done=done))
        elif r.status_code == 404 and not certain:
            with self.ledger.lock:  # the lost first try may have erased the person: its effect is unknown
                self.ledger.events.append(Event("erase", coll, start, end, False, person=person))

    def op_delete_faces(self, c: httpx.Client, rng: random.Random) -> None:
        coll = rng.choice(COLLECTIONS)
        picked = [f.face_id for f in self.pick_faces(rng, coll, rng.randint(1, 3))]
        if not picked:
            return
        r, certain, start = self.retry_until_answered(
            "delete_faces", lambda: c.post(f"/v1/collections/{coll}/faces/delete", json={"face_ids": picked}))
        end = self.now()
        self.ledger.status("delete_faces", r.status_code, r.text)
        if r.status_code == 200:
            body = r.json()
            with self.ledger.lock:
                self.ledger.events.append(Event("delete_faces", coll, start, end, certain, face_ids=tuple(picked),
                                                done=frozenset(body["deleted"]), unknown=frozenset(body["unknown"])))
        elif r.status_code == 404:
            with self.ledger.lock:  # the collection is gone (churn): nothing deleted by this request
                self.ledger.events.append(Event("delete_faces", coll, start, end, False, face_ids=tuple(picked)))

    def client_loop(self, i: int) -> None:
        rng = random.Random(self.args.seed * 1000 + i)
        ops = [(self.op_index, 40), (self.op_search_image, 20), (self.op_search_face, 18), (self.op_erase, 10),
               (self.op_delete_faces, 12)]
        funcs, weights = zip(*ops, strict=True)
        with self.client() as c:
            while not self.stop.is_set():
                op = rng.choices(funcs, weights=weights)[0]
                try:
                    op(c, rng)
                except Exception as exc:  # a bug in this script or an unexpected answer: count it, go on
                    self.ledger.status(op.__name__, f"client_error {type(exc).__name__}")
                    with self.ledger.lock:
                        self.ledger.notes[f"client_error {op.__name__}: {type(exc).__name__}: {exc}"[:200]] += 1
                self.stop.wait(self.args.pause * rng.uniform(0.5, 1.5))

    # ----------------------------------------------------------------------------------- churn, CLI, kills

    def churn_loop(self) -> None:
        rng = random.Random(self.args.seed + 7)
        with self.client() as c:
            while not self.stop.wait(self.args.churn_every * rng.uniform(0.7, 1.3)):
                r, certain, start = self.retry_until_answered("delete_collection",
                                                              lambda: c.delete(f"/v1/collections/{CHURN}"))
                end = self.now()
                self.ledger.status("delete_collection", r.status_code, r.text)
                if r.status_code == 200 or (r.status_code == 404 and not certain):
                    with self.ledger.lock:
                        self.ledger.events.append(Event("delete_collection", CHURN, start, end, certain))
                self.stop.wait(rng.uniform(0.5, 3))  # a while without the collection
                r, _, _ = self.retry_until_answered("create_collection",
                                                    lambda: c.post("/v1/collections", json={"name": CHURN}))
                self.ledger.status("create_collection", r.status_code, r.text)

    def cli_loop(self) -> None:
        rng = random.Random(self.args.seed + 11)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        n = 0
        while not self.stop.is_set():
            coll = rng.choice([STABLE[0], CHURN])
            person = rng.choice(self.persons[coll])
            n += 1
            path = self.work / f"cli-{n:05d}.jpg"
            path.write_bytes(_fresh(rng, rng.choice(self.images)))
            cmd = [sys.executable, "-m", "facelens", "index", coll, str(path), "--person", person, "--json",
                   "--home", str(self.home)]
            start = self.now()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.cli_proc = proc
            out, err = proc.communicate()
            end = self.now()
            self.cli_proc = None
            self.ledger.status("cli_index", f"exit {proc.returncode}")
            if proc.returncode == 0:
                doc = json.loads(out)
                faces = [f for img in doc["images"] for f in img.get("indexed", [])]
                self.record_faces(coll, faces, start, end, "cli")
            elif proc.returncode not in (3, -signal.SIGKILL):  # 3: the churned collection was missing
                with self.ledger.lock:  # a traceback or an unexpected exit status: a finding
                    self.ledger.cli_failures.append(f"{coll} at {start:.1f}-{end:.1f} s: exit {proc.returncode}: "
                                                    f"{err.strip()[-1500:]}")
            path.unlink(missing_ok=True)
            self.stop.wait(self.args.cli_pause)

    def worker_pids(self) -> list[int]:
        """The service worker processes: the supervisor's children started by multiprocessing's spawn."""
        assert self.serve.proc is not None
        sup = self.serve.proc.pid
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == sup and b"spawn_main" in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except (OSError, ValueError, IndexError):
                continue
        return pids

    def kill_loop(self) -> None:
        rng = random.Random(self.args.seed + 13)
        targets = ["worker", "supervisor", "cli"]
        k = 0
        while not self.stop.wait(self.args.kill_every * rng.uniform(0.6, 1.4)):
            target = targets[k % 3] if k < 3 else rng.choice(targets)  # each kind at least once
            k += 1
            at = self.now()
            entry: dict[str, Any] = {"target": target, "at_s": round(at, 1)}
            if target == "worker":
                pids = self.worker_pids()
                if pids:
                    pid = rng.choice(pids)
                    os.kill(pid, signal.SIGKILL)
                    entry["pid"] = pid
                    self.stop.wait(15)
                    entry["workers_after_15s"] = len(self.worker_pids())
            elif target == "supervisor":
                with self.serve_lock:
                    assert self.serve.proc is not None
                    os.killpg(self.serve.proc.pid, signal.SIGKILL)  # the supervisor and its workers
                    self.serve.proc.wait()
                    time.sleep(0.5)
                    t = time.monotonic()
                    self.serve.start()
                    entry["restart_s"] = round(time.monotonic() - t, 1)
            else:
                # wait for a CLI run to be under way, then kill it somewhere in its work
                give_up = time.monotonic() + 30
                while (self.cli_proc is None or self.cli_proc.poll() is not None) and time.monotonic() < give_up:
                    time.sleep(0.1)
                time.sleep(rng.uniform(0.05, 0.8))  # a CLI run takes ~1-3 s here (model load, detect, commit)
                proc = self.cli_proc
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    entry["pid"] = proc.pid
                else:
                    entry["skipped"] = "no CLI writer running"
            with self.ledger.lock:
                self.ledger.kills.append(entry)
            print(f"  [{at:6.0f} s] kill -9 {target}: {entry}", flush=True)

    # ----------------------------------------------------------------------------------- run and audit

    def run(self) -> dict[str, Any]:
        a = self.args
        print(f"soak: home {self.home}, {len(self.images)} images, {a.clients} clients, {a.minutes} min", flush=True)
        self.serve.start()
        with self.client() as c:
            for name in COLLECTIONS:
                r = c.post("/v1/collections", json={"name": name})
                assert r.status_code == 201, r.text
        threads = [threading.Thread(target=self.client_loop, args=(i,), daemon=True) for i in range(a.clients)]
        threads += [threading.Thread(target=f, daemon=True) for f in (self.churn_loop, self.cli_loop, self.kill_loop)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + a.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
            with self.ledger.lock:
                print(f"  [{self.now():6.0f} s] faces acked {len(self.ledger.faces)}, events {len(self.ledger.events)}"
                      f", searches {len(self.ledger.searches)}, 5xx {len(self.ledger.server_errors)}", flush=True)
        self.stop.set()
        for t in threads:
            t.join(timeout=300)
        with self.serve_lock:
            exit_status = self.serve.stop()
        serve_log = (self.work / "serve.log").read_text(errors="replace")
        graceful = exit_status in (0, -signal.SIGTERM) and "Application shutdown complete" in \
            serve_log.rsplit("=== start", 1)[-1]  # uvicorn may re-raise SIGTERM after a clean shutdown
        traffic_s = self.now()
        audit = self.audit()
        ledger = self.ledger
        return {
            "minutes": a.minutes, "traffic_seconds": round(traffic_s, 1), "clients": a.clients, "seed": a.seed,
            "images": len(self.images), "home": str(self.home), "serve_log": str(self.work / "serve.log"),
            "acknowledged_faces": len(ledger.faces),
            "acknowledged_faces_by_way": dict(Counter(f.via for f in ledger.faces.values())),
            "events": dict(Counter(e.kind for e in ledger.events)), "searches": len(ledger.searches),
            "responses": dict(sorted(ledger.statuses.items())), "server_errors_5xx": len(ledger.server_errors),
            "server_error_samples": ledger.server_errors[:20], "kills": ledger.kills, "notes": dict(ledger.notes),
            "serve_exit_status": exit_status, "graceful_stop": graceful,
            "tracebacks_in_service_log": serve_log.count("Traceback (most recent call last)"), **audit,
        }

    def audit(self) -> dict[str, Any]:
        ledger = self.ledger
        faces, events, end_t = ledger.faces, ledger.events, self.now()
        coll_deletes = {c: [e for e in events if e.kind == "delete_collection" and e.collection == c]
                        for c in COLLECTIONS}
        erasures = [e for e in events if e.kind == "erase"]
        face_deletes = [e for e in events if e.kind == "delete_faces"]
        violations: dict[str, list[str]] = {k: [] for k in (
            "lost", "not_erased", "erase_missed_face", "leaked_bytes", "leaked_ids", "cross_collection",
            "erased_returned", "collection_check", "log_verify")}

        def certainly_alive(f: Face, t: float, *, exclude: Event | None = None, until: float | None = None) -> bool:
            """f was acknowledged before t and nothing that could remove it started before ``until``
            (default t): a request that started before an erase ended may have been served first."""
            if f.end >= t:
                return False
            u = t if until is None else until
            if any(d.start <= u and d.end >= f.start for d in coll_deletes[f.collection]):
                return False
            for e in erasures:
                if e is not exclude and e.collection == f.collection and e.person == f.person and f.person \
                        and e.start <= u and e.end >= f.start:
                    return False
            return not any(e is not exclude and f.face_id in e.face_ids and e.start <= u for e in face_deletes)

        def removed_by(f: Face) -> str | None:
            """Why f must be gone at the end, if it must: an acknowledged erase/delete, or a later collection delete."""
            for e in erasures:
                if f.face_id in e.done:
                    return "erased"
            for e in face_deletes:
                if f.face_id in e.done:
                    return "deleted"
            if any(d.start > f.end for d in coll_deletes[f.collection]):
                return "collection_deleted"
            return None

        # 1. presence at the end, through the CLI as a user would see it
        listed: dict[str, set[str]] = {}
        names = json.loads(facelens("collection", "list", "--json", home=self.home).stdout)["collections"]
        for name in names:
            listed[name] = set()
            token: str | None = None
            while True:
                extra = ["--next-token", token] if token else []
                r = facelens("faces", "list", name, "--limit", "1000", "--json", *extra, home=self.home)
                doc = json.loads(r.stdout)
                listed[name] |= {f["face_id"] for f in doc["faces"]}
                token = doc.get("next_token")
                if not token:
                    break
        must_present = must_absent = ambiguous = 0
        gone: dict[str, str] = {}
        for f in faces.values():
            present = f.face_id in listed.get(f.collection, set())
            why = removed_by(f)
            if why:
                must_absent += 1
                gone[f.face_id] = why
                if present:
                    violations["not_erased"].append(f"{f.face_id} ({why}) still listed in {f.collection}")
            elif certainly_alive(f, end_t):
                must_present += 1
                if not present:
                    violations["lost"].append(f"{f.face_id} indexed into {f.collection} via {f.via} at "
                                              f"{f.start:.1f}-{f.end:.1f} s is missing at the end")
            else:
                ambiguous += 1
        for e in erasures:  # an erase must take every face of the person indexed (and still there) before it
            if not e.certain:
                continue
            for f in faces.values():
                if f.collection == e.collection and f.person == e.person and f.face_id not in e.done \
                        and certainly_alive(f, e.start, exclude=e, until=e.end):
                    violations["erase_missed_face"].append(
                        f"erase of {e.person} in {e.collection} at {e.start:.1f} s left {f.face_id} (acked "
                        f"{f.end:.1f} s via {f.via})")
        for e in face_deletes:
            for fid in e.unknown:
                asked = faces.get(fid)
                if asked is not None and e.certain and certainly_alive(asked, e.start, exclude=e):
                    violations["lost"].append(f"delete in {e.collection} at {e.start:.1f} s: face {fid} acked at "
                                              f"{asked.end:.1f} s via {asked.via} was unknown")

        # 2. what the searches returned
        unattributed = 0
        ack_before: dict[str, float] = {}
        for e in erasures + face_deletes:
            for fid in e.done:
                ack_before[fid] = min(ack_before.get(fid, float("inf")), e.end)
        for s in ledger.searches:
            if s.by_face and s.status == 404:
                probe = faces[s.by_face]
                if certainly_alive(probe, s.start):
                    violations["lost"].append(f"search of {s.collection} by face {probe.face_id} at {s.start:.1f} s: "
                                              f"404 though acked at {probe.end:.1f} s via {probe.via}, not removed")
            for fid in s.returned:
                found = faces.get(fid)
                if found is None:
                    unattributed += 1  # from an index whose answer was lost in a kill
                    continue
                if found.collection != s.collection:
                    violations["cross_collection"].append(
                        f"search of {s.collection} returned {fid} of {found.collection}")
                elif any(d.start > found.end and d.end < s.start for d in coll_deletes[s.collection]):
                    deleted_at = min(d.end for d in coll_deletes[s.collection] if d.start > found.end)
                    violations["cross_collection"].append(
                        f"search of {s.collection} at {s.start:.1f} s returned {fid} (acked {found.end:.1f} s) of "
                        f"the generation deleted at {deleted_at:.1f} s")
                if ack_before.get(fid, float("inf")) < s.start:
                    violations["erased_returned"].append(f"search of {s.collection} at {s.start:.1f} s returned "
                                                         f"{fid}, erased/deleted at {ack_before[fid]:.1f} s")

        # 3. bytes of what is gone, in every file under H
        alive_embeddings = {f.embedding for f in faces.values() if f.face_id not in gone and f.embedding}
        targets = {fid: faces[fid].embedding for fid in gone if faces[fid].embedding not in alive_embeddings}
        leaks = scan_files(self.home, {fid: e for fid, e in targets.items() if e}, ids=list(gone))
        for hit in leaks:
            violations["leaked_ids" if hit["what"] == "face_id" else "leaked_bytes"].append(
                f"{hit['face_id']} ({gone[hit['face_id']]}): {hit['what']} in {hit['file']} at {hit['offset']}")

        # 4. the tools' own checks
        checks = {}
        for name in names:
            r = facelens("collection", "check", name, "--json", home=self.home)
            checks[name] = json.loads(r.stdout) if r.stdout.strip() else {"exit": r.returncode, "stderr": r.stderr}
            if r.returncode != 0:
                violations["collection_check"].append(f"{name}: exit {r.returncode}: {r.stdout.strip()[:300]}")
        verify = facelens("log", "verify", "--json", home=self.home)
        if verify.returncode != 0:
            violations["log_verify"].append(f"exit {verify.returncode}: {verify.stdout.strip()[:300]} "
                                            f"{verify.stderr.strip()[:300]}")
        if ledger.server_errors:
            violations["server_errors_5xx"] = ledger.server_errors[:50]
        if ledger.cli_failures:
            violations["cli_failures"] = ledger.cli_failures
        return {
            "faces_that_must_be_present": must_present, "faces_that_must_be_gone": must_absent,
            "faces_ambiguous": ambiguous, "gone_by_reason": dict(Counter(gone.values())),
            "gone_with_embedding_checked": len([t for t in targets.values() if t]),
            "listed_at_end": {k: len(v) for k, v in listed.items()},
            "listed_but_never_acknowledged": sum(len(v - set(faces)) for v in listed.values()),
            "search_results_unattributed": unattributed,
            "bytes_scanned": sum(p.stat().st_size for p in self.home.rglob("*") if p.is_file()),
            "collection_check": checks, "log_verify": verify.stdout.strip()[:500],
            "violation_counts": {k: len(v) for k, v in violations.items()},
            "violations_by_collection": {k: dict(Counter(c for c in COLLECTIONS for m in v
                                                         if re.search(rf"(?<![\w-]){c}(?![\w-])", m)))
                                         for k, v in violations.items() if v},
            "violations": {k: v[:30] for k, v in violations.items() if v},
        }


def _fresh(rng: random.Random, data: bytes) -> bytes:
    """Always new bytes (image_variant may return the original): crop a few pixels and re-encode."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    d = rng.randrange(1, max(2, w // 25))
    buf = io.BytesIO()
    img.crop((d, rng.randrange(0, d + 1), w - rng.randrange(0, d + 1), h)).save(buf, "JPEG",
                                                                                 quality=rng.randrange(70, 96))
    return buf.getvalue()


def scan_files(home: Path, embeddings: dict[str, bytes], *, ids: list[str]) -> list[dict[str, Any]]:
    """Every place under ``home`` where a removed face's embedding or id still is.

    Looked for: the float32 embedding as stored, and its float16 copy (as in rerank.f16), each by 8-byte
    anchors at the start and the middle, confirmed over 32 bytes (a fragment) at any byte offset; and
    the face id text in every file but the search log (which keeps the ids searches returned, by design).
    """
    patterns: dict[bytes, tuple[str, str, bytes]] = {}  # 8-byte anchor -> (face id, what, 32-byte confirmation)
    for fid, emb in embeddings.items():
        f16 = np.frombuffer(emb, dtype="<f4").astype("<f2").tobytes()
        for what, blob in (("float32 embedding", emb), ("float16 embedding", f16)):
            for off in (0, len(blob) // 2):
                patterns[blob[off:off + 8]] = (fid, what, blob[off:off + 32])
    id_patterns = {fid.encode()[:8]: (fid, "face_id", fid.encode()) for fid in ids}
    keys = np.array(sorted({int.from_bytes(k, "little") for k in patterns}), dtype=np.uint64)
    id_keys = np.array(sorted({int.from_bytes(k, "little") for k in id_patterns}), dtype=np.uint64)
    hits: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        in_log = path.name.startswith("search-log.sqlite")
        for shift in range(8):
            n = (len(data) - shift) // 8
            if n <= 0:
                continue
            words = np.frombuffer(data, dtype="<u8", count=n, offset=shift)
            for table, ks in ((patterns, keys), (id_patterns, id_keys)):
                if not len(ks) or (table is id_patterns and in_log):
                    continue
                for idx in np.nonzero(np.isin(words, ks))[0]:
                    off = shift + 8 * int(idx)
                    fid, what, confirm = table[data[off:off + 8]]
                    if data[off:off + len(confirm)] == confirm and (fid, what, str(path)) not in seen:
                        seen.add((fid, what, str(path)))
                        hits.append({"face_id": fid, "what": what, "file": str(path.relative_to(home)),
                                     "offset": off})
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pause", type=float, default=0.4, help="mean seconds a client waits between calls")
    parser.add_argument("--kill-every", type=float, default=150.0, help="mean seconds between kill -9s")
    parser.add_argument("--churn-every", type=float, default=60.0, help="mean seconds between deletes of soak-churn")
    parser.add_argument("--cli-pause", type=float, default=3.0, help="seconds between CLI index runs")
    parser.add_argument("--persons", type=int, default=8, help="person ids per collection")
    parser.add_argument("--lfw-images", type=int, default=200, help="LFW images to use when ../shared has them")
    parser.add_argument("--home", type=Path, default=None, help="facelens home to use (default: a new temporary one)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = Soak(args).run()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("collection_check", "responses")}, indent=1))
    print(f"wrote {args.output}")
    bad = sum(result["violation_counts"].values()) + result["server_errors_5xx"]
    sys.exit(1 if bad or not result["graceful_stop"] else 0)


if __name__ == "__main__":
    main()
