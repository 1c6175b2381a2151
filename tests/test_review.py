"""The review queue (docs/identification.md, "Review"): face crops kept per enrolled face; every candidate of
an investigation a review item, recorded with the search; identities withheld from the searcher unless the
policy discloses them; four eyes, final decisions with reasons; expiry; erasure withdraws items and leaves no
crop on disk. Through the Python API, the service over real HTTP, and the CLI as a real process."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import facelens
from facelens.accountability.actor import Actor
from facelens.accountability.review import RETENTION_ACTOR, ReviewState
from facelens.errors import (
    FaceNotFoundError,
    InvalidArgumentError,
    ReviewDecidedError,
    ReviewForbiddenError,
    ReviewItemNotFoundError,
)
from facelens.server import ServerSettings

from ._service import LiveService, make_key
from .conftest import PEOPLE, portrait
from .test_erasure import found_in

ROOT = Path(__file__).resolve().parents[1]
ALICE, BOB, CAROL = Actor.python("alice"), Actor.python("bob"), Actor.python("carol")
LOOSE = 1.0  # a lead floor at which every face is a lead: a list as long as the collection


def is_jpeg_crop(data: bytes) -> tuple[int, int]:
    """The size of a crop, after checking it is a small JPEG."""
    assert data[:3] == b"\xff\xd8\xff" and 500 < len(data) < 20_000, len(data)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG" and max(img.size) <= 160
        return img.size


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("review-home")


@pytest.fixture(scope="module")
def eng(home: Path) -> Iterator[facelens.Engine]:
    e = facelens.Engine(home=str(home), threads=2)
    yield e
    e.close()


def fill(eng: facelens.Engine, name: str, *, lead_floor_fmr: float | None = None, **policy: Any) -> dict[str, str]:
    """A collection of every person's 'a' portrait (person and external ids); returns face id by person."""
    eng.create_collection(name, lead_floor_fmr=lead_floor_fmr, policy=policy)
    out = {}
    for p in PEOPLE:
        r = eng.index_faces(name, portrait(p, "a"), external_image_id=f"{p}_a", person_id=p)
        out[p] = r.indexed[0]["face_id"]
    return out


def logged(eng: facelens.Engine, seq: int) -> dict[str, Any]:
    (entry,) = eng.log.entries(after_seq=seq - 1, limit=1)
    return dict(entry.body)


# -- face crops --------------------------------------------------------------------------------------

def test_index_keeps_a_small_crop_of_each_face_unless_the_policy_says_not(eng: facelens.Engine, home: Path) -> None:
    faces = fill(eng, "crops")
    sizes = [is_jpeg_crop(eng.face_crop("crops", fid)) for fid in faces.values()]
    assert all(max(s) == 160 for s in sizes), sizes  # the portraits' faces are larger: scaled down
    assert len({eng.face_crop("crops", fid) for fid in faces.values()}) == len(PEOPLE)
    with pytest.raises(FaceNotFoundError, match="no face"):
        eng.face_crop("crops", "no-such-face")
    off = fill(eng, "nocrops", face_crops=False)
    with pytest.raises(FaceNotFoundError, match="has no crop"):
        eng.face_crop("nocrops", off[PEOPLE[0]])
    db = home / "collections" / "nocrops" / "faces.sqlite"
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM face_crops").fetchone()[0] == 0


def test_a_collection_from_before_the_review_tables_gets_them_when_opened(tmp_path: Path) -> None:
    with facelens.Engine(home=str(tmp_path), threads=1) as e:
        e.create_collection("old")
        e.index_faces("old", portrait(PEOPLE[0]), person_id=PEOPLE[0])
    db = tmp_path / "collections" / "old" / "faces.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript("DROP TABLE face_crops; DROP TABLE review_items; DROP TABLE review_probes;")
    conn.close()
    with facelens.Engine(home=str(tmp_path), threads=1) as e:
        fid = e.index_faces("old", portrait(PEOPLE[1]), person_id=PEOPLE[1]).indexed[0]["face_id"]
        is_jpeg_crop(e.face_crop("old", fid))
        (r,) = e.search_faces_by_image("old", portrait(PEOPLE[1], "b"), mode="investigate", actor=ALICE)
        assert r.candidates and all(c.review_item_id for c in r.candidates)
        e.delete_collection("old")


# -- opening items -----------------------------------------------------------------------------------

def test_an_investigation_opens_one_item_per_candidate_and_withholds_who_they_are(eng: facelens.Engine) -> None:
    faces = fill(eng, "inv", lead_floor_fmr=LOOSE)
    person = PEOPLE[2]
    (r,) = eng.search_faces_by_image("inv", portrait(person, "b"), mode="investigate", actor=ALICE,
                                     purpose="case 11")
    assert len(r.candidates) == len(PEOPLE) and r.search_id and r.log_entry is not None
    for c in r.candidates:  # what the searcher sees: ranks, scores and what they mean, not who
        assert c.review_item_id and c.face_id is None and c.person_id is None and c.external_image_id is None
        assert c.bbox == () and c.meaning.startswith(f"Lead {c.rank}, not a match")
    d = r.to_dict()
    assert d["search_id"] == r.search_id and all(c["face_id"] is None for c in d["candidates"])

    entry = logged(eng, r.log_entry["seq"])  # the search is recorded, with who the leads were and the items
    assert entry["action"] == "search_faces_by_image" and entry["search_id"] == r.search_id
    assert entry["review_items"] == [c.review_item_id for c in r.candidates]
    assert entry["actor"] == ALICE.to_dict() and entry["purpose"] == "case 11" and entry["mode"] == "investigate"
    assert entry["results"][0]["candidates"][0]["face_id"] == faces[person]
    assert entry["results"][0]["candidates"][0]["review_item_id"] == r.candidates[0].review_item_id
    assert eng.log.verify().ok

    items, token = eng.review_list("inv", state="pending")
    assert token is None and {i.item_id for i in items} == {c.review_item_id for c in r.candidates}
    first = eng.review_get("inv", r.candidates[0].review_item_id)
    assert first.state is ReviewState.PENDING and first.rank == 1 and first.score == r.candidates[0].score
    assert (first.face_id, first.person_id, first.external_image_id) == (faces[person], person, f"{person}_a")
    assert first.searcher == ALICE and first.purpose == "case 11" and first.search_id == r.search_id
    assert first.log_entry == r.log_entry and first.collection_size == len(PEOPLE)
    assert first.meaning == r.candidates[0].meaning
    assert first.to_dict()["candidate"]["person_id"] == person
    assert first.withheld().to_dict()["candidate"]["person_id"] is None
    probe = eng.review_probe_crop("inv", first.item_id)
    is_jpeg_crop(probe)
    assert probe != eng.face_crop("inv", faces[person])  # the searched photo's face, not the stored one

    # pages, oldest first
    page1, tok = eng.review_list("inv", limit=3)
    page2, tok2 = eng.review_list("inv", limit=100, after=tok)
    assert tok is not None and tok2 is None and len(page1) == 3
    assert [i.item_id for i in page1 + page2] == [i.item_id for i in items]
    with pytest.raises(InvalidArgumentError, match="page token"):
        eng.review_list("inv", after="nonsense")
    with pytest.raises(InvalidArgumentError, match="review state"):
        eng.review_list("inv", state="maybe")
    with pytest.raises(ReviewItemNotFoundError):
        eng.review_get("inv", "0" * 32)


def test_disclosure_and_review_are_the_collections_choice(eng: facelens.Engine) -> None:
    faces = fill(eng, "open", lead_floor_fmr=LOOSE, disclose_before_review=True)
    (r,) = eng.search_faces_by_image("open", portrait(PEOPLE[3], "b"), mode="investigate", actor=ALICE)
    assert r.candidates[0].face_id == faces[PEOPLE[3]] and r.candidates[0].person_id == PEOPLE[3]
    assert r.candidates[0].review_item_id is not None
    fill(eng, "noreview", review_required=False)
    (n,) = eng.search_faces_by_image("noreview", portrait(PEOPLE[3], "b"), mode="investigate", actor=ALICE)
    assert n.candidates[0].person_id == PEOPLE[3] and n.candidates[0].review_item_id is None
    assert eng.review_list("noreview") == ([], None)
    # an identification is no investigation: no items
    before = len(eng.review_list("open", limit=1000)[0])
    (ident,) = eng.search_faces_by_image("open", portrait(PEOPLE[3], "b"), actor=ALICE)
    assert ident.matches and len(eng.review_list("open", limit=1000)[0]) == before
    # by a stored face (its own crop is the probe) and for persons
    by_face = eng.search_faces("open", faces[PEOPLE[3]], mode="investigate", actor=ALICE, max_candidates=2)
    assert by_face.candidates and all(c.review_item_id for c in by_face.candidates)
    item = eng.review_get("open", by_face.candidates[0].review_item_id)
    assert item.probe_face_id == faces[PEOPLE[3]] and item.action == "search_faces"
    assert eng.review_probe_crop("open", item.item_id) == eng.face_crop("open", faces[PEOPLE[3]])
    persons = eng.search_persons_by_image("open", portrait(PEOPLE[4], "b"), mode="investigate", actor=ALICE)
    assert persons.candidates[0].person_id == PEOPLE[4]
    assert eng.review_get("open", persons.candidates[0].review_item_id).action == "search_persons_by_image"


# -- deciding ----------------------------------------------------------------------------------------

def test_four_eyes_final_decisions_with_reasons(eng: facelens.Engine, home: Path) -> None:
    fill(eng, "decide", lead_floor_fmr=LOOSE)
    (r,) = eng.search_faces_by_image("decide", portrait(PEOPLE[5], "b"), mode="investigate", actor=ALICE,
                                     max_candidates=2)
    first, second = (c.review_item_id for c in r.candidates)
    assert first is not None and second is not None
    with pytest.raises(ReviewForbiddenError, match="four eyes"):
        eng.review_decide("decide", first, "confirm", "same scar", actor=ALICE)
    with pytest.raises(ReviewForbiddenError, match="must name who"):
        eng.review_decide("decide", first, "confirm", "same scar", actor=None)
    for bad in ("", "   ", None):
        with pytest.raises(InvalidArgumentError, match="needs a reason"):
            eng.review_decide("decide", first, "confirm", bad, actor=BOB)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="'confirm' or 'reject'"):
        eng.review_decide("decide", first, "maybe", "unsure", actor=BOB)
    assert eng.review_get("decide", first).state is ReviewState.PENDING  # nothing refused changed anything

    done = eng.review_decide("decide", first, "confirm", "  same ear shape and scar  ", actor=BOB)
    assert done.state is ReviewState.CONFIRMED and done.decided_by == BOB and done.reason == "same ear shape and scar"
    assert done.to_dict()["decision"]["decision"] == "confirmed"
    head = eng.log.entries(after_seq=0, limit=10_000)[-1].body
    assert head["action"] == "review_decided" and head["item_id"] == first and head["decision"] == "confirmed"
    assert head["actor"] == BOB.to_dict() and head["reason"] == "same ear shape and scar"
    assert head["search_id"] == r.search_id and head["face_id"] == done.face_id
    for again in ("confirm", "reject"):
        with pytest.raises(ReviewDecidedError, match="decisions are final"):
            eng.review_decide("decide", first, again, "changed my mind", actor=CAROL)
    assert eng.review_get("decide", first).state is ReviewState.CONFIRMED

    is_jpeg_crop(eng.review_probe_crop("decide", second))  # one item still pending: the probe crop stays
    eng.review_decide("decide", second, "reject", "different nose", actor=CAROL)
    with pytest.raises(ReviewItemNotFoundError, match="probe crop was deleted"):
        eng.review_probe_crop("decide", second)
    db = home / "collections" / "decide" / "faces.sqlite"
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM review_probes").fetchone()[0] == 0
    assert [i.item_id for i in eng.review_list("decide", state="rejected")[0]] == [second]
    assert eng.log.verify().ok


def test_a_search_that_named_no_searcher_cannot_have_its_leads_decided(eng: facelens.Engine) -> None:
    (r,) = eng.search_faces_by_image("decide", portrait(PEOPLE[6], "b"), mode="investigate", max_candidates=1)
    item = r.candidates[0].review_item_id
    assert item is not None and r.log_entry is None and eng.review_get("decide", item).searcher is None
    with pytest.raises(ReviewForbiddenError, match="named no searcher"):
        eng.review_decide("decide", item, "confirm", "looks alike", actor=BOB)


def test_items_expire_after_the_retention_and_their_crops_go(eng: facelens.Engine, home: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from facelens.accountability import review

    fill(eng, "brief", retention_days=1.0)
    (r,) = eng.search_faces_by_image("brief", portrait(PEOPLE[0], "b"), mode="investigate", actor=ALICE)
    ids = [c.review_item_id for c in r.candidates]
    db = home / "collections" / "brief" / "faces.sqlite"
    real_now = review._now
    monkeypatch.setattr(review, "_now", lambda: real_now() + dt.timedelta(hours=23))  # within the retention
    assert [i.item_id for i in eng.review_list("brief", state="pending", actor=BOB)[0]] == ids
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM review_probes").fetchone()[0] == 1
    monkeypatch.setattr(review, "_now", lambda: real_now() + dt.timedelta(hours=25))  # a day and an hour later
    with pytest.raises(ReviewDecidedError, match="expired"):  # past its time: not decidable, even unpurged
        eng.review_decide("brief", ids[0], "confirm", "same", actor=BOB)
    assert eng.review_list("brief", state="pending", actor=BOB) == ([], None)
    expired = eng.review_list("brief", state="expired")[0]
    assert [i.item_id for i in expired] == ids
    assert all(i.face_id is None and i.person_id is None for i in expired)  # who the lead was: gone with it
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM review_probes").fetchone()[0] == 0
    purge = [e.body for e in eng.log.entries(after_seq=0, limit=10_000) if e.body["action"] == "review_purged"]
    assert purge[-1]["item_ids"] == ids and purge[-1]["reason"] == "expired"
    assert purge[-1]["actor"] == RETENTION_ACTOR.to_dict() and purge[-1]["count"] == len(ids)
    assert eng.review_purge("brief", actor=BOB) == []  # nothing left to purge: nothing recorded


def test_erasure_withdraws_the_leads_and_leaves_no_crop_on_disk(eng: facelens.Engine, home: Path) -> None:
    faces = fill(eng, "erase")
    gone, other = PEOPLE[1], PEOPLE[2]
    (r,) = eng.search_faces_by_image("erase", portrait(gone, "b"), mode="investigate", actor=ALICE, max_candidates=1)
    pending = r.candidates[0].review_item_id
    (r2,) = eng.search_faces_by_image("erase", portrait(other, "b"), mode="investigate", actor=ALICE,
                                      max_candidates=1)
    decided = r2.candidates[0].review_item_id
    assert pending and decided
    eng.review_decide("erase", decided, "confirm", "same person", actor=BOB)
    secrets = {"face crop": eng.face_crop("erase", faces[gone]), "probe crop": eng.review_probe_crop("erase", pending),
               "other's face crop": eng.face_crop("erase", faces[other]), "person id": gone.encode(),
               "other's face id": faces[other].encode(), "face id": faces[gone].encode()}
    assert eng.review_get("erase", pending).person_id == gone
    folder = home / "collections" / "erase"
    assert {h.split(" in ")[0] for h in found_in(folder, secrets)} == set(secrets)  # the check can fail

    assert eng.delete_person("erase", gone) == [faces[gone]]
    assert eng.delete_faces("erase", [faces[other]]) == [faces[other]]
    withdrawn = eng.review_get("erase", pending)
    assert withdrawn.state is ReviewState.WITHDRAWN and withdrawn.face_id is None and withdrawn.person_id is None
    still = eng.review_get("erase", decided)  # a decision stays decided; who it was about is erased
    assert still.state is ReviewState.CONFIRMED and still.face_id is None and still.person_id is None
    with pytest.raises(ReviewItemNotFoundError):
        eng.review_probe_crop("erase", pending)
    with pytest.raises(FaceNotFoundError):
        eng.face_crop("erase", faces[gone])
    with pytest.raises(ReviewDecidedError, match="withdrawn"):
        eng.review_decide("erase", pending, "confirm", "same", actor=BOB)
    assert found_in(folder, secrets) == []  # (other collections of this home hold crops of the same photos)


_ERASER = textwrap.dedent("""
    import base64, json, sys, time
    sys.path.insert(0, sys.argv[2])
    import facelens
    from facelens.accountability.actor import Actor
    from tests.conftest import PEOPLE, portrait
    eng = facelens.Engine(home=sys.argv[1], threads=1)
    eng.create_collection("k")
    ids = {p: eng.index_faces("k", portrait(p), person_id=p).indexed[0]["face_id"] for p in PEOPLE[:3]}
    (r,) = eng.search_faces_by_image("k", portrait(PEOPLE[0], "b"), mode="investigate", max_candidates=1,
                                     actor=Actor.python("alice"))
    item = r.candidates[0].review_item_id
    crops = [eng.face_crop("k", ids[PEOPLE[0]]), eng.review_probe_crop("k", item)]
    print(json.dumps({"crops": [base64.b64encode(c).decode() for c in crops], "item": item}), flush=True)
    eng.delete_person("k", PEOPLE[0])
    print("done", flush=True)
    time.sleep(600)
""")


def test_crops_erased_leave_no_bytes_on_disk_after_sigkill(tmp_path: Path) -> None:
    """A process killed right after an erasure returned (its WAL left behind, nothing closed) leaves none of
    the erased face's crop or its lead's probe crop in the collection's files."""
    home = tmp_path / "home"
    script = tmp_path / "eraser.py"
    script.write_text(_ERASER)
    proc = subprocess.Popen([sys.executable, str(script), str(home), str(ROOT)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        told = json.loads(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "done"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    secrets = {f"crop {n}": base64.b64decode(c) for n, c in enumerate(told["crops"])}
    assert found_in(home / "collections", secrets) == []
    with facelens.Engine(home=str(home), threads=1) as e:
        assert e.review_get("k", told["item"]).state is ReviewState.WITHDRAWN
        assert e.describe_collection("k").face_count == 2


# -- the service, over real HTTP ---------------------------------------------------------------------

def test_service_review_queue_scopes_four_eyes_and_final_decisions(tmp_path: Path) -> None:
    admin_token = make_key(tmp_path, name="admin", admin=True)
    live = LiveService(ServerSettings(home=tmp_path, workers=2, engine_threads=1, rate_limit=0))

    def client(token: str) -> httpx.Client:
        return httpx.Client(base_url=live.url, timeout=120, headers={"Authorization": f"Bearer {token}"})

    try:
        admin = client(admin_token)
        assert admin.post("/v1/collections", json={"name": "q"}).status_code == 201
        assert admin.post("/v1/collections", json={"name": "elsewhere"}).status_code == 201
        live.app.state.services.engine.set_lead_floor("q", LOOSE)
        faces = {}
        for person in PEOPLE[:4]:
            r = admin.post("/v1/collections/q/faces", files={"image": portrait(person, "a").read_bytes()},
                           data={"person_id": person, "external_image_id": f"{person}_a"})
            assert r.status_code in (200, 201), r.text
            faces[person] = r.json()["indexed"][0]["face_id"]
        searcher = client(make_key(tmp_path, name="searcher", grants={"q": ["search"]}))
        reviewer = client(make_key(tmp_path, name="reviewer", grants={"q": ["review"]}))
        both = client(make_key(tmp_path, name="both", grants={"q": ["search", "review"]}))
        reader = client(make_key(tmp_path, name="reader", grants={"q": ["read"]}))
        outsider = client(make_key(tmp_path, name="outsider", grants={"elsewhere": ["review"]}))

        probe = portrait(PEOPLE[0], "b").read_bytes()
        found = searcher.post("/v1/collections/q/search/image", files={"image": probe},
                              data={"purpose": "case 9", "mode": "investigate"})
        assert found.status_code == 200, found.text
        (result,) = found.json()["results"]
        cands = result["candidates"]
        assert len(cands) == 4 and all(c["face_id"] is None and c["person_id"] is None for c in cands)
        assert all(c["review_item_id"] for c in cands) and result["search_id"]
        item = cands[0]["review_item_id"]
        (entry,) = admin.get("/v1/log", params={"after": found.json()["log_entry"]["seq"] - 1, "limit": 1}
                             ).json()["entries"]
        assert entry["review_items"] == [c["review_item_id"] for c in cands]
        assert entry["search_id"] == result["search_id"]
        assert admin.get("/v1/log", params={"limit": 1}).json()["head"]["seq"] == entry["seq"]  # logged once

        # the searcher sees its own items, without who; cannot decide
        mine = searcher.get("/v1/review").json()["items"]
        assert {i["item_id"] for i in mine} == {c["review_item_id"] for c in cands}
        assert all(i["candidate"]["face_id"] is None for i in mine)
        assert searcher.get(f"/v1/collections/q/review/{item}").json()["candidate"]["person_id"] is None
        refused = searcher.post(f"/v1/collections/q/review/{item}/confirm", json={"reason": "it is her"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"

        # the reviewer sees who, and both crops
        shown = reviewer.get(f"/v1/collections/q/review/{item}")
        assert shown.status_code == 200, shown.text
        doc = shown.json()
        assert doc["candidate"]["person_id"] == PEOPLE[0] and doc["candidate"]["face_id"] == faces[PEOPLE[0]]
        assert doc["searcher"]["id"] == entry["key_id"] and doc["purpose"] == "case 9"
        assert doc["log_entry"] == found.json()["log_entry"] and doc["state"] == "pending"
        jpg = reviewer.get(f"/v1/collections/q/review/{item}/probe.jpg")
        assert jpg.status_code == 200 and jpg.headers["content-type"] == "image/jpeg"
        assert jpg.headers["cache-control"] == "no-store"
        is_jpeg_crop(jpg.content)
        crop = reader.get(f"/v1/collections/q/faces/{faces[PEOPLE[0]]}/crop.jpg")
        assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
        is_jpeg_crop(crop.content)
        assert reviewer.get(f"/v1/collections/q/faces/{faces[PEOPLE[0]]}/crop.jpg").status_code == 403
        assert reader.get("/v1/collections/q/faces/nope/crop.jpg").status_code == 404
        assert reader.get(f"/v1/collections/q/review/{item}").status_code == 403
        assert outsider.get(f"/v1/collections/q/review/{item}").status_code == 404
        assert outsider.get("/v1/review").json()["items"] == []
        assert outsider.get("/v1/review", params={"collection": "q"}).status_code == 404
        assert len(reviewer.get("/v1/review", params={"collection": "q"}).json()["items"]) == 4

        # decisions: a reason is required; final; the reviewer who searched may not decide
        assert reviewer.post(f"/v1/collections/q/review/{item}/confirm", json={}).status_code == 422
        ok = reviewer.post(f"/v1/collections/q/review/{item}/confirm", json={"reason": "same ears and hairline"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["state"] == "confirmed" and ok.json()["decision"]["decided_by"]["name"] == "reviewer"
        again = reviewer.post(f"/v1/collections/q/review/{item}/reject", json={"reason": "second thoughts"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "review_decided"
        # once confirmed, the searcher may see who its lead was
        assert searcher.get(f"/v1/collections/q/review/{item}").json()["candidate"]["person_id"] == PEOPLE[0]
        assert searcher.get(f"/v1/collections/q/review/{cands[1]['review_item_id']}").json()[
            "candidate"]["person_id"] is None

        own = both.post("/v1/collections/q/search/image", files={"image": probe},
                        data={"purpose": "case 10", "mode": "investigate", "max_candidates": "1"})
        own_item = own.json()["results"][0]["candidates"][0]["review_item_id"]
        mine_too = both.post(f"/v1/collections/q/review/{own_item}/confirm", json={"reason": "my own lead"})
        assert mine_too.status_code == 403 and mine_too.json()["error"]["code"] == "review_forbidden"
        assert "four eyes" in mine_too.json()["error"]["message"]
        # the searcher key sees only its own searches' items, not "both"'s
        assert own_item not in {i["item_id"] for i in searcher.get("/v1/review").json()["items"]}
        assert searcher.get(f"/v1/collections/q/review/{own_item}").status_code == 404
        confirmed = reviewer.get("/v1/review", params={"state": "confirmed"}).json()["items"]
        assert [i["item_id"] for i in confirmed] == [item]
        page = reviewer.get("/v1/review", params={"limit": 2}).json()
        assert len(page["items"]) == 2 and page["next_after"]
        rest = reviewer.get("/v1/review", params={"after": page["next_after"]}).json()
        assert len(rest["items"]) == 3 and rest["next_after"] is None
        decided = [e for e in admin.get("/v1/log", params={"limit": 1000}).json()["entries"]
                   if e["action"] == "review_decided"]
        assert [(d["item_id"], d["decision"]) for d in decided] == [(item, "confirmed")]
        assert live.app.state.services.log.verify().ok
    finally:
        live.stop()


# -- the CLI, as a user runs it ----------------------------------------------------------------------

ITEM_KEYS = {"item_id", "collection", "state", "search_id", "probe_index", "action", "created", "expires", "searcher",
             "purpose", "probe", "candidate", "log_entry", "decision"}


def _cli(*args: str, actor: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACELENS_ACTOR": actor}
    return subprocess.run([sys.executable, "-m", "facelens", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def test_cli_review_list_show_confirm_reject_purge(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    with facelens.Engine(home=home, threads=1) as e:
        faces = fill(e, "c", lead_floor_fmr=LOOSE)
        (r,) = e.search_faces_by_image("c", portrait(PEOPLE[0], "b"), mode="investigate", max_candidates=2,
                                       actor=Actor("cli", "alice"), purpose="case 12")
    first, second = (c.review_item_id for c in r.candidates)
    assert first is not None and second is not None

    listed = _cli("review", "list", "--state", "pending", "--json", "--home", home, actor="bob")
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert {i["item_id"] for i in doc["items"]} == {first, second}
    assert doc["next_after"] is None and all(set(i) == ITEM_KEYS for i in doc["items"])
    text = _cli("review", "list", "--home", home, actor="bob")
    assert text.returncode == 0 and first in text.stdout and "searcher cli:alice" in text.stdout

    out = tmp_path / "crops"
    shown = _cli("review", "show", "c", first, "--out", str(out), "--json", "--home", home, actor="bob")
    assert shown.returncode == 0, shown.stderr
    item = json.loads(shown.stdout)
    assert set(item) == ITEM_KEYS | {"files"} and item["candidate"]["person_id"] == PEOPLE[0]
    assert item["candidate"]["face_id"] == faces[PEOPLE[0]] and item["purpose"] == "case 12"
    assert item["searcher"] == {"kind": "cli", "id": "alice", "name": None}
    assert Path(item["files"]["probe"]).name == f"{first}-probe.jpg"
    assert is_jpeg_crop(Path(item["files"]["probe"]).read_bytes())
    assert Path(item["files"]["candidate"]).read_bytes() == Path(out / f"{first}-candidate.jpg").read_bytes()
    words = _cli("review", "show", "c", first, "--home", home, actor="bob")
    assert words.returncode == 0 and "must be reviewed by a person" in words.stdout and "case 12" in words.stdout

    own = _cli("review", "confirm", "c", first, "--reason", "my own lead", "--home", home, actor="alice")
    assert own.returncode == 5 and "four eyes" in own.stderr and "Traceback" not in own.stderr, own.stderr
    no_reason = _cli("review", "confirm", "c", first, "--home", home, actor="bob")
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    blank = _cli("review", "confirm", "c", first, "--reason", " ", "--home", home, actor="bob")
    assert blank.returncode == 2 and "needs a reason" in blank.stderr
    ok = _cli("review", "confirm", "c", first, "--reason", "same ears", "--json", "--home", home, actor="bob")
    assert ok.returncode == 0, ok.stderr
    decided = json.loads(ok.stdout)
    assert decided["state"] == "confirmed" and decided["decision"]["decided_by"]["id"] == "bob"
    assert decided["decision"]["reason"] == "same ears"
    again = _cli("review", "reject", "c", first, "--reason", "no", "--home", home, actor="carol")
    assert again.returncode == 3 and "decisions are final" in again.stderr
    rejected = _cli("review", "reject", "c", second, "--reason", "different nose", "--home", home, actor="carol")
    assert rejected.returncode == 0 and "rejected review item" in rejected.stdout
    unknown = _cli("review", "show", "c", "0" * 32, "--home", home, actor="bob")
    assert unknown.returncode == 3 and "no review item" in unknown.stderr
    key = _cli("keys", "create", "--collection", "c", "--scope", "review", "--name", "reviewer", "--home", home,
               actor="bob")
    assert key.returncode == 0 and key.stdout.strip().startswith("fl_"), key.stderr + key.stdout
    assert "review on 'c'" in key.stderr
    purged = _cli("review", "purge", "c", "--json", "--home", home, actor="bob")
    assert purged.returncode == 0 and json.loads(purged.stdout) == {"collection": "c", "expired": [], "count": 0}
    with facelens.Engine(home=home, threads=1) as e:
        body = [x.body for x in e.log.entries(after_seq=0, limit=1000) if x.body["action"] == "review_decided"]
        assert [(b["item_id"], b["decision"], b["actor"]["id"]) for b in body] == [
            (first, "confirmed", "bob"), (second, "rejected", "carol")]
        assert e.log.verify().ok


def test_an_erasure_receipt_counts_the_crops_and_the_leads_withdrawn(tmp_path: Path) -> None:
    with facelens.Engine(home=str(tmp_path), threads=1) as e:
        faces = fill(e, "r")
        (r,) = e.search_faces_by_image("r", portrait(PEOPLE[0], "b"), mode="investigate", max_candidates=1,
                                       actor=ALICE)
        receipt = e.erase_person("r", PEOPLE[0], actor=BOB)
        assert receipt.face_ids == (faces[PEOPLE[0]],)
        assert receipt.counts == {"faces": 1, "crops": 1, "review_items_withdrawn": 1, "probe_crops": 1}
        entry = e.log.entries(after_seq=receipt.log_entry["seq"] - 1, limit=1)[0].body
        assert entry["action"] == "person_erased"
        assert entry["review_items_withdrawn"] == [r.candidates[0].review_item_id]
        gone = e.erase_faces("r", [faces[PEOPLE[1]]], actor=BOB)
        assert gone.counts == {"faces": 1, "crops": 1, "review_items_withdrawn": 0, "probe_crops": 0}
