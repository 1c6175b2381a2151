"""Transparency reports: counted from the signed log of real actions, checked against what was done."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import facelens
from facelens import Actor
from facelens.accountability.log import Checkpoint, LogSigningKey, canonical_json, make_checkpoint, read_entries
from facelens.accountability.transparency import build_transparency, render_transparency_html, write_transparency
from facelens.engine import image_sha256
from facelens.errors import InvalidArgumentError, NoFaceError, error_status
from facelens.server import ServerSettings
from facelens.server.keys import KeyStore

from ._service import LiveService, make_key
from .conftest import PEOPLE, portrait

ROOT = Path(__file__).resolve().parents[1]
XSS = "<script>alert(1)</script>"


_NOT_LOGGED = {"bbox", "external_image_id", "searched_face", "matches", "searched_face_id", "collection_size",
               "candidates", "mode", "notice", "meaning"}


def search_rec(action: str, *, collection: str, purpose: str | None, mode: str, results: list[Any],
               error: Exception | None = None) -> dict[str, Any]:
    """A search's log record in the shape docs/identification.md names (what the engine records; built
    here from the results so that the test does not depend on the builder's signature)."""
    docs = [r.to_dict() for r in results]
    rec: dict[str, Any] = {
        "action": action, "search_id": uuid.uuid4().hex, "purpose": purpose, "collection": collection, "mode": mode,
        "collection_size": docs[0]["collection_size"] if docs else None, "probe": {"image_sha256": "1" * 64},
        "options": {"mode": mode},
        "operating_point": {k: v for k, v in docs[0].items() if k not in _NOT_LOGGED} if docs else None,
        "results": [{"candidates": [{k: v for k, v in m.items() if k not in _NOT_LOGGED}
                                    for m in d.get("matches", d.get("candidates", []))]} for d in docs]}
    if error is not None:
        rec["error"] = {"code": error_status(error)[1], "message": str(error)}
    return rec


@dataclass
class Done:
    """What the test did, counted as it was done (the report must say the same)."""

    since: str = ""
    until: str = ""
    searches: int = 0
    identify: int = 0
    investigate: int = 0
    no_face: int = 0
    candidates: int = 0
    matches: int = 0
    per_purpose: dict[str | None, int] = field(default_factory=dict)
    per_actor: dict[tuple[str, str], int] = field(default_factory=dict)
    created: int = 0
    confirmed: int = 0
    rejected: int = 0
    expired: int = 0
    withdrawn: int = 0
    pending: int = 0
    images: int = 0
    faces: int = 0
    faces_erased: int = 0
    persons_erased: int = 0
    receipts: list[str] = field(default_factory=list)
    policy_changes: int = 0
    compares: int = 0
    thresholds: dict[tuple[str, float], int] = field(default_factory=dict)


class Demo:
    """A home where an officer searches, a reviewer decides, an admin enrols and erases: each action
    run on the engine and recorded as the engine records it (with ``Engine.record`` for the action shapes
    the engine does not log itself yet)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.eng = facelens.Engine(home=str(home), threads=1)
        self.officer = Actor.for_key("k_officer", "desk 4")
        self.other = Actor.cli()
        self.reviewer = Actor.for_key("k_review", "review team")
        self.admin = Actor.python("enrolment-script")
        self.items: dict[str, list[str]] = {}  # search_id -> review item ids
        self.face_of: dict[str, list[str]] = {}  # person -> face ids

    def close(self) -> None:
        self.eng.close()

    def record(self, actor: Actor | None, record: dict[str, Any]) -> None:
        self.eng.record(actor, record)

    def create(self, name: str) -> None:
        self.eng.create_collection(name)
        self.record(self.admin, {"action": "collection_created", "collection": name, "purpose": None,
                                 "policy": self.eng.collection_policy(name).to_dict(),
                                 "lead_floor_fmr": self.eng.lead_floor(name), "calibration": None})

    def enrol(self, name: str, person: str, done: Done | None) -> None:
        path = portrait(person, "a")
        result = self.eng.index_faces(name, path, person_id=person, external_image_id=path.name)
        ids = [f["face_id"] for f in result.indexed]
        self.face_of[person] = ids
        self.record(self.admin, {"action": "faces_indexed", "collection": name, "purpose": None,
                                 "image_sha256": image_sha256(path), "face_ids": ids, "person_id": person,
                                 "refused": [{"reason": r.value} for f in result.unindexed for r in f.refusal_reasons],
                                 "already_indexed": result.already_indexed})
        if done is not None:
            done.images += 1
            done.faces += len(ids)

    def search(self, name: str, image: Any, actor: Actor, purpose: str | None, mode: str, done: Done | None,
               *, action: str = "search_faces_by_image") -> None:
        try:
            if action == "search_persons_by_image":
                results = [self.eng.search_persons_by_image(name, image, mode=mode)]
            else:
                results = list(self.eng.search_faces_by_image(name, image, mode=mode))
        except NoFaceError as exc:
            self.record(actor, search_rec(action, collection=name, purpose=purpose, mode=mode, results=[], error=exc))
            if done is not None:
                done.searches += 1
                done.no_face += 1
                done.identify += mode == "identify"
                done.investigate += mode == "investigate"
                done.per_purpose[purpose] = done.per_purpose.get(purpose, 0) + 1
                done.per_actor[(actor.kind, actor.id)] = done.per_actor.get((actor.kind, actor.id), 0) + 1
            return
        rec = search_rec(action, collection=name, purpose=purpose, mode=mode, results=results)
        returned = sum(len(r.candidates) if mode == "investigate" else len(r.matches) for r in results)
        if mode == "investigate":
            rec["review_items"] = self.items[rec["search_id"]] = [uuid.uuid4().hex for _ in range(returned)]
        self.record(actor, rec)
        if done is not None:
            done.searches += 1
            done.identify += mode == "identify"
            done.investigate += mode == "investigate"
            done.per_purpose[purpose] = done.per_purpose.get(purpose, 0) + 1
            done.per_actor[(actor.kind, actor.id)] = done.per_actor.get((actor.kind, actor.id), 0) + 1
            if mode == "investigate":
                done.candidates += returned
                done.created += returned
            else:
                done.matches += returned
            op = results[0].operating_point
            key = (mode, round(op.threshold, 6))
            done.thresholds[key] = done.thresholds.get(key, 0) + 1

    def decide(self, name: str, item: str, decision: str, done: Done | None) -> None:
        self.record(self.reviewer, {"action": "review_decided", "collection": name, "purpose": None,
                                    "item_id": item, "search_id": None, "decision": decision,
                                    "reason": "compared ears and hairline", "face_id": None})
        if done is not None:
            setattr(done, decision, getattr(done, decision) + 1)

    def purge(self, name: str, items: list[str], reason: str, done: Done | None, actor: Actor | None = None) -> None:
        self.record(actor or self.admin, {"action": "review_purged", "collection": name, "purpose": None,
                                          "item_ids": items, "count": len(items), "reason": reason})
        if done is not None:
            setattr(done, reason, getattr(done, reason) + len(items))

    def erase_person(self, name: str, person: str, done: Done | None) -> None:
        ids = self.eng.delete_person(name, person)
        receipt = uuid.uuid4().hex
        self.record(self.admin, {"action": "person_erased", "collection": name, "purpose": None,
                                 "person_id": person, "face_ids": ids, "review_items_withdrawn": 0,
                                 "receipt_id": receipt})
        if done is not None:
            done.persons_erased += 1
            done.faces_erased += len(ids)
            done.receipts.append(receipt)

    def delete_faces(self, name: str, person: str, done: Done | None) -> None:
        ids = self.eng.delete_faces(name, self.face_of[person])
        receipt = uuid.uuid4().hex
        self.record(self.admin, {"action": "faces_deleted", "collection": name, "purpose": None,
                                 "face_ids": ids, "receipt_id": receipt})
        if done is not None:
            done.faces_erased += len(ids)
            done.receipts.append(receipt)


def _blank_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buf, format="JPEG")
    return buf.getvalue()


def _boundary() -> str:
    """A time strictly between the entries written before and after it."""
    time.sleep(0.01)
    t = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(0.01)
    return t


def build_demo(home: Path) -> Done:
    """Three phases: before the period, the period (counted in ``Done``), after it."""
    demo = Demo(home)
    done = Done()
    try:
        # before the period: a collection, an enrolment, an investigation whose items stay open
        demo.create("watch")
        demo.enrol("watch", PEOPLE[0], None)
        demo.search("watch", portrait(PEOPLE[0], "b"), demo.officer, "case 2026-0001", "investigate", None)
        early = [i for items in demo.items.values() for i in items]
        done.since = _boundary()
        # the period
        for person in PEOPLE[1:6]:
            demo.enrol("watch", person, done)
        demo.eng.set_collection_policy("watch", {"retention_days": 7}, actor=demo.admin)
        done.policy_changes += 1
        for person in PEOPLE[:3]:
            demo.search("watch", portrait(person, "b"), demo.officer, "case 2026-0173", "identify", done)
        for person in [*PEOPLE[1:4], PEOPLE[5]]:
            demo.search("watch", portrait(person, "b"), demo.officer, XSS, "investigate", done)
        demo.search("watch", portrait(PEOPLE[4], "b"), demo.other, None, "investigate", done,
                    action="search_persons_by_image")
        demo.search("watch", _blank_jpeg(), demo.officer, "case 2026-0173", "identify", done)
        # an entry from before actors were logged: the key id alone names who searched
        old = search_rec("search_faces_by_image", collection="watch", purpose="old case", mode="identify",
                         results=list(demo.eng.search_faces_by_image("watch", portrait(PEOPLE[5], "b"))))
        del old["search_id"], old["mode"]
        demo.eng.log.append({**old, "key_id": "k_legacy"})
        done.searches += 1
        done.identify += 1
        done.matches += len(old["results"][0]["candidates"])
        done.per_purpose["old case"] = 1
        done.per_actor[("key", "k_legacy")] = 1
        key = ("identify", old["operating_point"]["threshold"])
        done.thresholds[key] = done.thresholds.get(key, 0) + 1
        in_period = [i for s, items in demo.items.items() for i in items if i not in early]
        assert len(in_period) >= 5, "each investigation of the portraits lists the mate at least"
        demo.decide("watch", early[0], "confirmed", done)  # an item from before the period, decided in it
        demo.decide("watch", in_period[0], "confirmed", done)
        demo.decide("watch", in_period[1], "rejected", done)
        demo.purge("watch", [in_period[2]], "expired", done)
        demo.erase_person("watch", PEOPLE[2], done)
        demo.purge("watch", [in_period[3]], "withdrawn", done)
        demo.delete_faces("watch", PEOPLE[3], done)
        res = demo.eng.compare(portrait(PEOPLE[0], "a"), portrait(PEOPLE[0], "b"))
        outcome = {"score": res.score, "fmr": res.fmr, "match": res.match}
        demo.record(demo.officer, {"action": "compare", "purpose": "passport check", "collection": None,
                                   "collection_size": None, "probe": {"image_a_sha256": "3" * 64,
                                                                      "image_b_sha256": "4" * 64},
                                   "options": {}, "operating_point": res.operating_point.to_dict(),
                                   "results": [outcome]})
        done.compares += 1
        ks = KeyStore.open(home, action_log=demo.eng.log)
        try:
            new = ks.create(name=XSS, grants={"watch": ["search"]})
            ks.revoke(new.key.key_id)
        finally:
            ks.close()
        done.until = _boundary()
        # after the period: counted nowhere, and not in the pending count as of until
        demo.search("watch", portrait(PEOPLE[0], "b"), demo.officer, "later case", "investigate", None)
        demo.decide("watch", in_period[4], "confirmed", None)  # pending as of until all the same
        closed_by_until = 2 + 2 + 1  # early[0], in_period[0..3]
        done.pending = len(early) + len(in_period) - closed_by_until
    finally:
        demo.close()
    return done


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Done]:
    home = tmp_path_factory.mktemp("transparency") / "home"
    return home, build_demo(home)


def test_transparency_counts_what_was_done(demo_home: tuple[Path, Done]) -> None:
    home, done = demo_home
    report = build_transparency(home, done.since, done.until)
    assert report["log"]["verification"]["status"] == "intact"
    assert report["log"]["unproven_entries_in_period"] == 0
    (c,) = report["collections"]
    assert c["name"] == "watch" and c["exists_now"]
    s = c["searches"]
    assert (s["total"], s["identify"], s["investigate"]) == (done.searches, done.identify, done.investigate)
    assert s["no_face"] == done.no_face == 1 and s["failed"] == 1
    assert {p["purpose"]: p["count"] for p in s["by_purpose"]} == done.per_purpose
    assert s["without_purpose"] == done.per_purpose[None] == 1
    assert {(a["actor"]["kind"], a["actor"]["id"]): a["count"] for a in s["by_actor"]} == done.per_actor
    officer = next(a["actor"] for a in s["by_actor"] if a["actor"]["id"] == "k_officer")
    assert officer == {"kind": "key", "id": "k_officer", "name": "desk 4"}
    assert c["candidates"]["total"] == done.candidates and c["candidates"]["investigations"] == done.investigate
    assert sum(d["searches"] for d in c["candidates"]["per_search"]) == done.investigate
    assert sum(d["returned"] * d["searches"] for d in c["candidates"]["per_search"]) == done.candidates
    assert c["matches"]["total"] == done.matches and c["matches"]["identifications"] == done.identify - done.no_face
    assert c["reviews"] == {"created": done.created, "confirmed": done.confirmed, "rejected": done.rejected,
                            "expired": done.expired, "withdrawn": done.withdrawn, "deleted_with_collection": 0,
                            "pending": done.pending}
    assert done.confirmed == 2 and done.pending > 0
    assert c["enrolments"] == {"images": done.images, "faces": done.faces, "faces_refused": 0, "already_indexed": 0}
    er = c["erasures"]
    assert er["faces"] == done.faces_erased and er["persons_erased"] == done.persons_erased == 1
    assert sorted(r["receipt_id"] for r in er["receipts"]) == sorted(done.receipts)
    assert len(c["policy_changes"]) == done.policy_changes
    assert c["policy_changes"][0]["changes"] == {"retention_days": {"before": 30.0, "after": 7.0}}
    assert c["lifecycle"] == []  # created before the period
    used = {(p["mode"], p["threshold"]): p["searches"] for p in c["operating_points"]}
    assert used == done.thresholds
    assert report["compares"]["total"] == done.compares == 1 and report["compares"]["matches"] == 1
    assert [k["name"] for k in report["keys"]["created"]] == [XSS] and len(report["keys"]["revoked"]) == 1
    t = report["totals"]
    assert (t["searches"], t["candidates"], t["reviews_pending"], t["faces_erased"], t["erasure_receipts"]) == (
        done.searches, done.candidates, done.pending, done.faces_erased, len(done.receipts))
    json.dumps(report, allow_nan=False)  # JSON-ready


def test_transparency_audited_rates_are_read_at_each_threshold(demo_home: tuple[Path, Done]) -> None:
    home, done = demo_home
    report = build_transparency(home, done.since, done.until)
    points = report["collections"][0]["operating_points"]
    assert {p["mode"] for p in points} == {"identify", "investigate"}
    cal = facelens.calibration.load_calibration(ROOT / "facelens" / "calibration" / "data" / "buffalo_s.npz")
    for p in points:
        a = p["audited"]
        assert a is not None and a["calibration"] == cal.name == p["calibration"] and a["source"] == "model"
        assert a["overall"]["fmr"] == pytest.approx(cal.overall.fmr(p["threshold"])[0])
        by_name = {g["name"]: g for g in a["groups"]}
        assert set(by_name) == set(cal.curves)
        for name, curve in cal.curves.items():
            assert by_name[name]["fmr"] == pytest.approx(curve.fmr(p["threshold"])[0])
            assert by_name[name]["impostor_pairs"] == curve.n_pairs
        spoken = [g for g in a["groups"] if g["status"] != "unsupported"]
        worst = max(spoken, key=lambda g: g["fmr"])
        assert a["worst_group"] == worst["name"]
        assert a["worst_group_ratio"] == pytest.approx(worst["fmr"] / a["overall"]["fmr"])
        # a group of too few pairs cannot speak for a small rate: it says so instead of giving one
        assert {g["status"] for g in a["groups"]} <= {"measured", "extrapolated", "unsupported"}
    investigate = next(p for p in points if p["mode"] == "investigate")
    assert investigate["max_fmr"] == pytest.approx(1e-3)  # the lead floor
    assert investigate["audited"]["overall"]["status"] == "measured"


def test_transparency_period_filter_and_defaults(demo_home: tuple[Path, Done]) -> None:
    home, done = demo_home
    everything = build_transparency(home)
    period = build_transparency(home, done.since, done.until)
    before = build_transparency(home, until=done.since)
    after = build_transparency(home, since=done.until)
    for key in ("searches", "candidates", "reviews_created", "images_enrolled"):
        assert everything["totals"][key] == before["totals"][key] + period["totals"][key] + after["totals"][key]
    assert before["totals"]["searches"] == 1 and after["totals"]["searches"] == 1
    assert before["collections"][0]["lifecycle"][0]["action"] == "collection_created"
    entries = list(read_entries(home / "service" / "search-log.sqlite"))
    assert sum(r["log"]["entries_in_period"] for r in (before, period, after)) == len(entries)
    # pending as of the end of each period: nothing was closed before the period
    assert before["totals"]["reviews_pending"] == before["totals"]["reviews_created"]
    with pytest.raises(InvalidArgumentError, match="before until"):
        build_transparency(home, done.until, done.since)
    with pytest.raises(InvalidArgumentError, match="ISO 8601"):
        build_transparency(home, "last tuesday")
    empty = build_transparency(home, "2001-01-01", "2001-02-01")
    assert empty["totals"]["searches"] == 0 and empty["collections"] == []
    assert empty["log"]["verification"]["ok"]  # the log is still checked whole


def test_transparency_page_escapes_user_text(demo_home: tuple[Path, Done], tmp_path: Path) -> None:
    home, done = demo_home
    report = build_transparency(home, done.since, done.until)
    html_path, json_path = write_transparency(report, tmp_path / "out")
    page = html_path.read_text(encoding="utf-8")
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # a purpose and a key name
    assert "<script" not in page.lower() and "src=" not in page and "href=" not in page  # self-contained
    assert json.loads(json_path.read_text(encoding="utf-8")) == json.loads(json.dumps(report))
    assert "The record verifies" in page and "case 2026-0173" in page and "desk 4" in page
    for person in PEOPLE:  # no person id, no external image id of anyone searched for or found
        assert person not in page and person not in json_path.read_text()


def _tamper(log: Path) -> int:
    """Edit one entry's purpose, re-hash it and the chain after it, as someone without the key would."""
    conn = sqlite3.connect(log, isolation_level=None)
    conn.execute("DROP TRIGGER entries_append_only_update")
    rows = conn.execute("SELECT seq, body FROM entries ORDER BY seq").fetchall()
    import hashlib

    target = next(seq for seq, body in rows if json.loads(body).get("purpose") == "case 2026-0173")
    prev = None
    for seq, text in rows:
        body = json.loads(text)
        if seq < target:
            continue
        if seq == target:
            body["purpose"] = "routine check"
        if prev is not None:
            body["prev_hash"] = prev
        new = canonical_json(body)
        prev = hashlib.sha256(new.encode()).hexdigest()
        conn.execute("UPDATE entries SET body = ?, hash = ? WHERE seq = ?", (new, prev, seq))
    conn.execute("UPDATE head SET hash = ?", (prev,))
    conn.close()
    return int(target)


def test_transparency_tampered_log_fails_in_the_report(tmp_path: Path) -> None:
    home = tmp_path / "home"
    demo = Demo(home)
    try:
        demo.create("c")
        demo.enrol("c", PEOPLE[0], None)
        for purpose in ("case 2026-0173", "case 2026-0174"):
            demo.search("c", portrait(PEOPLE[0], "b"), demo.officer, purpose, "identify", None)
    finally:
        demo.close()
    assert build_transparency(home)["log"]["verification"]["ok"]
    bad = _tamper(home / "service" / "search-log.sqlite")
    report = build_transparency(home)
    v = report["log"]["verification"]
    assert not v["ok"] and v["status"] == "broken" and v["first_bad_seq"] == bad
    assert report["log"]["unproven_entries_in_period"] == report["log"]["last_seq"] - bad + 1
    page = render_transparency_html(report)
    assert "THE RECORD FAILS VERIFICATION" in page and "prove nothing" in page


def test_transparency_checkpoint_given_or_found(tmp_path: Path) -> None:
    home = tmp_path / "home"
    demo = Demo(home)
    try:
        demo.create("c")
    finally:
        demo.close()
    log = home / "service" / "search-log.sqlite"
    key = LogSigningKey.load(home / "service" / "log-signing.key")
    cp = make_checkpoint(log, key)
    assert build_transparency(home)["log"]["checkpoint"] is None
    folder = home / "service" / "checkpoints"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(cp.to_dict()))
    found = build_transparency(home)["log"]["checkpoint"]
    assert found["source"] == "found" and found["seq"] == cp.seq and found["log_matches"] and found["covers_period"]
    forged = Checkpoint(seq=cp.seq, hash="f" * 64, time=cp.time, public_key=cp.public_key, signature=cp.signature)
    given = build_transparency(home, checkpoint=forged)
    assert given["log"]["checkpoint"]["signature_valid"] is False and given["log"]["verification"]["ok"]
    other = tmp_path / "cp.json"
    other.write_text(json.dumps(cp.to_dict()))
    assert build_transparency(home, checkpoint=other)["log"]["checkpoint"]["source"] == "given"


def test_transparency_missing_log_reports_no_activity(tmp_path: Path) -> None:
    report = build_transparency(tmp_path / "nothing")
    assert report["log"]["verification"]["status"] == "missing" and report["totals"]["searches"] == 0
    assert "There is no record" in render_transparency_html(report)


def test_transparency_cli_writes_both_files(demo_home: tuple[Path, Done], tmp_path: Path) -> None:
    home, done = demo_home
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "facelens", "report", "transparency", "--home", str(home),
                           "--since", done.since, "--until", done.until, "--out", str(out), "--json"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["totals"]["searches"] == done.searches
    assert json.loads((out / "transparency.json").read_text())["totals"] == doc["totals"]
    assert "&lt;script&gt;" in (out / "transparency.html").read_text()
    text = subprocess.run([sys.executable, "-m", "facelens", "report", "transparency", "--home", str(home),
                           "--since", done.until, "--until", done.since, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert text.returncode == 2 and "before until" in text.stderr


def test_transparency_http_is_admin_only(demo_home: tuple[Path, Done]) -> None:
    home, done = demo_home
    admin = make_key(home, name="auditor", admin=True)
    searcher = make_key(home, name="s", grants={"watch": ["search"]})
    live = LiveService(ServerSettings(home=home, workers=2, engine_threads=1, rate_limit=0))
    try:
        url = f"{live.url}/v1/reports/transparency"
        params = {"since": done.since, "until": done.until}
        r = httpx.get(url, params=params, headers={"Authorization": f"Bearer {admin}"}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["totals"]["searches"] == done.searches and r.json()["log"]["verification"]["ok"]
        page = httpx.get(url, params={**params, "format": "html"}, headers={"Authorization": f"Bearer {admin}"},
                         timeout=120)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and XSS not in page.text
        assert httpx.get(url, headers={"Authorization": f"Bearer {searcher}"}).status_code == 403
        assert httpx.get(url).status_code == 401
        bad = httpx.get(url, params={"since": "soon"}, headers={"Authorization": f"Bearer {admin}"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_argument"
    finally:
        live.stop()


def test_transparency_of_an_engine_uses_its_home(demo_home: tuple[Path, Done]) -> None:
    home, done = demo_home
    eng = facelens.Engine(home=str(home), threads=1)
    try:
        report = build_transparency(eng, done.since, done.until)
    finally:
        eng.close()
    assert report["totals"] == build_transparency(home, done.since, done.until)["totals"]
    assert report["collections"][0]["operating_points"] == build_transparency(
        home, done.since, done.until)["collections"][0]["operating_points"]


def test_transparency_reads_a_collections_own_calibration_and_outlives_its_deletion(tmp_path: Path) -> None:
    home = tmp_path / "home"
    demo = Demo(home)
    try:
        demo.eng.create_collection("own", calibration=ROOT / "facelens" / "calibration" / "data" / "buffalo_s.npz")
        demo.enrol("own", PEOPLE[0], None)
        demo.search("own", portrait(PEOPLE[0], "b"), demo.officer, "case 1", "identify", None)
        demo.search("own", portrait(PEOPLE[0], "b"), demo.officer, "case 1", "investigate", None)
        assert build_transparency(home)["totals"]["reviews_pending"] == 1
        points = build_transparency(home)["collections"][0]["operating_points"]
        assert [p["audited"]["source"] for p in points] == ["collection", "collection"]
        demo.eng.delete_collection("own")
        demo.record(demo.admin, {"action": "collection_deleted", "collection": "own", "purpose": None,
                                 "face_count": 1, "person_count": 1})
    finally:
        demo.close()
    (c,) = build_transparency(home)["collections"]
    assert not c["exists_now"] and c["lifecycle"][-1]["action"] == "collection_deleted"
    assert c["lifecycle"][-1]["face_count"] == 1
    assert c["reviews"]["deleted_with_collection"] == 1 and c["reviews"]["pending"] == 0
    # its own profile went with it; the model's profile of the same name still gives the audited rates
    assert c["operating_points"][0]["audited"]["source"] == "model"
