"""Collection policies enforced for every entry point: the modes a collection allows, the floor on an
identification's operating point, a required purpose; changed only by an admin (HTTP PATCH, the CLI), every
change logged, and seen by other processes from their next call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import facelens
from facelens import Actor, CollectionPolicy
from facelens.accountability.log import read_entries
from facelens.errors import InvalidArgumentError, PolicyError
from facelens.server import ServerSettings

from ._service import LiveService, make_key
from .conftest import PEOPLE, portrait

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("policy-home")


OPEN = CollectionPolicy(disclose_before_review=True)


@pytest.fixture(scope="module")
def eng(home: Path) -> Iterator[facelens.Engine]:
    """An engine whose ``firsts`` collection holds each person's first portrait (person ids set); its
    investigations disclose identities before review, so that the tests can check who was found."""
    e = facelens.Engine(home=str(home), threads=2)
    e.create_collection("firsts", policy=OPEN)
    for person in PEOPLE:
        e.index_faces("firsts", portrait(person, "a"), external_image_id=f"{person}_a", person_id=person)
    yield e
    e.close()


@pytest.fixture
def rules(eng: facelens.Engine) -> Iterator[str]:
    """The ``firsts`` collection, its policy put back afterwards."""
    yield "firsts"
    eng.set_collection_policy("firsts", OPEN)


def _actions(home: Path) -> list[dict[str, Any]]:
    log = home / "service" / "search-log.sqlite"
    return [dict(e.body) for e in read_entries(log)] if log.exists() else []


# -- the engine ------------------------------------------------------------------------------------

def test_policy_mode_not_allowed_is_refused_naming_the_allowed_modes(eng: facelens.Engine, rules: str) -> None:
    probe = portrait(PEOPLE[0], "b")
    eng.set_collection_policy(rules, {"allowed_modes": ["investigate"]})
    with pytest.raises(PolicyError, match=r"allows only investigate searches, not identify"):
        eng.search_faces_by_image(rules, probe)
    with pytest.raises(PolicyError, match="not identify"):
        eng.search_persons_by_image(rules, probe)
    (r,) = eng.search_faces_by_image(rules, probe, mode="investigate")
    assert r.candidates and r.candidates[0].person_id == PEOPLE[0]
    eng.set_collection_policy(rules, {"allowed_modes": ["identify"]})
    face_id = r.candidates[0].face_id
    with pytest.raises(PolicyError, match=r"allows only identify searches, not investigate"):
        eng.search_faces(rules, face_id, mode="investigate")
    assert eng.search_faces(rules, face_id).mode.value == "identify"


def test_policy_purpose_required_refuses_a_search_without_one(eng: facelens.Engine, rules: str) -> None:
    probe = portrait(PEOPLE[1], "b")
    assert eng.search_faces_by_image(rules, probe)[0].matches  # no purpose needed by default
    eng.set_collection_policy(rules, {"purpose_required": True})
    for purpose in (None, "", "   "):
        with pytest.raises(PolicyError, match="requires a purpose"):
            eng.search_faces_by_image(rules, probe, purpose=purpose)
    with pytest.raises(PolicyError, match="requires a purpose"):
        eng.search_persons_by_image(rules, probe, mode="investigate")
    with pytest.raises(InvalidArgumentError, match="control characters"):
        eng.search_faces_by_image(rules, probe, purpose="case 7\nforged line")
    (r,) = eng.search_faces_by_image(rules, probe, purpose="case 2026-114")
    assert r.matches[0].person_id == PEOPLE[1]


def test_policy_floor_refuses_a_looser_rate_and_raises_the_default(eng: facelens.Engine, rules: str) -> None:
    probe = portrait(PEOPLE[2], "b")
    (free,) = eng.search_faces_by_image(rules, probe)
    assert free.policy_floor is None and free.to_dict()["policy_floor"] is None
    default_fpir = eng.config.max_fpir
    floor = default_fpir / 10
    eng.set_collection_policy(rules, {"max_fpir": floor})
    # the default (looser than the floor) runs at the floor, and says so
    (r,) = eng.search_faces_by_image(rules, probe)
    strict = eng.operating_point(max_fpir=floor, collection_size=r.collection_size,
                                 calibration=eng.collection_calibration(rules))
    assert r.operating_point.max_fpir == floor and r.threshold == strict.threshold > free.threshold
    assert r.policy_floor is not None and r.policy_floor.applied
    assert r.to_dict()["policy_floor"] == {"max_fpir": floor, "max_fmr": None, "applied": True}
    # asking for a looser rate, in any of the three ways, is refused whoever asks
    for asked in ({"max_fpir": default_fpir}, {"max_fmr": strict.max_fmr * 100},
                  {"min_score": strict.threshold - 0.05}):
        with pytest.raises(PolicyError, match=rf"no looser than max_fpir {floor:g}.*{next(iter(asked))}"):
            eng.search_faces_by_image(rules, probe, **asked)
    with pytest.raises(PolicyError, match="no looser than"):
        eng.search_persons_by_image(rules, probe, max_fpir=default_fpir)
    # the floor itself and anything stricter are allowed, and not marked as raised
    for asked in ({"max_fpir": floor}, {"max_fpir": floor / 2}, {"min_score": strict.threshold + 0.01}):
        (ok,) = eng.search_faces_by_image(rules, probe, **asked)
        assert ok.policy_floor is not None and not ok.policy_floor.applied and ok.threshold >= strict.threshold
    # an investigation keeps its own lead floor: the identify floor does not apply to it
    (lead,) = eng.search_faces_by_image(rules, probe, mode="investigate")
    assert lead.operating_point.max_fmr == eng.lead_floor(rules) and lead.policy_floor is None


def test_policy_floor_and_purpose_hold_for_a_search_by_embeddings(eng: facelens.Engine, rules: str) -> None:
    """The entry point of video searches: n embeddings of one person, each look at the rate / n."""
    looks = np.stack([eng.embed(portrait(PEOPLE[4], "b")), eng.embed(portrait(PEOPLE[4], "a"))])
    floor = eng.config.max_fpir / 10
    eng.set_collection_policy(rules, {"max_fpir": floor, "purpose_required": True})
    with pytest.raises(PolicyError, match="requires a purpose"):
        eng.search_faces_by_embedding(rules, looks)
    r = eng.search_faces_by_embedding(rules, looks, purpose="case 5")  # the default, raised to the floor
    assert r.policy_floor is not None and r.policy_floor.applied and r.operating_point.max_fpir == floor / 2
    assert r.matches[0].person_id == PEOPLE[4]
    with pytest.raises(PolicyError, match=r"per look, of 2"):
        eng.search_faces_by_embedding(rules, looks, purpose="case 5", max_fpir=eng.config.max_fpir)
    one = eng.search_faces_by_embedding(rules, looks[0], purpose="case 5", max_fpir=floor)
    assert one.policy_floor is not None and not one.policy_floor.applied and one.operating_point.max_fpir == floor


def test_policy_fmr_floor_applies_to_a_per_comparison_rate(eng: facelens.Engine, rules: str) -> None:
    probe = portrait(PEOPLE[3], "b")
    eng.set_collection_policy(rules, {"max_fmr": 1e-7})
    with pytest.raises(PolicyError, match=r"max_fmr 1e-07.*asked for max_fmr 1e-06"):
        eng.search_faces_by_image(rules, probe, max_fmr=1e-6)
    (r,) = eng.search_faces_by_image(rules, probe, max_fmr=1e-7)
    assert r.policy_floor is not None and not r.policy_floor.applied and r.max_fmr == 1e-7
    (d,) = eng.search_faces_by_image(rules, probe)  # the default FPIR at 8 faces is ~4e-4 per comparison
    assert d.policy_floor is not None and d.policy_floor.applied and d.max_fmr == 1e-7


def test_policy_change_logged_with_actor_and_seen_by_another_process(eng: facelens.Engine, rules: str,
                                                                      home: Path) -> None:
    admin = Actor.python("policy-test-admin")
    eng.set_collection_policy(rules, {"allowed_modes": ["investigate"], "purpose_required": True}, actor=admin)
    entry = [a for a in _actions(home) if a["action"] == "policy_changed"][-1]
    assert entry["actor"] == admin.to_dict() and entry["collection"] == rules
    assert entry["before"]["allowed_modes"] == ["identify", "investigate"]
    assert entry["after"]["allowed_modes"] == ["investigate"] and entry["after"]["purpose_required"]
    code = ("import sys, facelens\n"
            "e = facelens.Engine(home=sys.argv[1], threads=1)\n"
            "try:\n"
            "    e.search_faces_by_image('firsts', sys.argv[2], purpose='x')\n"
            "except facelens.PolicyError as exc:\n"
            "    print('refused:', exc)\n")
    out = subprocess.run([sys.executable, "-c", code, str(home), str(portrait(PEOPLE[0], "b"))],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "not identify" in out.stdout
    assert eng.describe_collection(rules).to_dict()["policy"]["allowed_modes"] == ["investigate"]


def test_lead_floor_change_is_logged_with_before_and_after(eng: facelens.Engine, home: Path) -> None:
    eng.create_collection("floored", lead_floor_fmr=1e-3)
    try:
        assert eng.set_lead_floor("floored", 1e-4, actor=Actor.python("floor-admin")) == 1e-4
        entry = [a for a in _actions(home) if a["action"] == "lead_floor_changed"][-1]
        assert (entry["before"], entry["after"], entry["collection"]) == (1e-3, 1e-4, "floored")
        assert eng.lead_floor("floored") == 1e-4 and eng.describe_collection("floored").lead_floor_fmr == 1e-4
        for bad in (0, 2, "1e-3", True):
            with pytest.raises(InvalidArgumentError, match="lead_floor_fmr"):
                eng.set_lead_floor("floored", bad)  # type: ignore[arg-type]
    finally:
        eng.delete_collection("floored")


# -- the service -----------------------------------------------------------------------------------

def test_policy_over_http_admin_only_changes_logged_and_enforced(tmp_path: Path) -> None:
    admin = make_key(tmp_path, name="admin desk", admin=True)
    live = LiveService(ServerSettings(home=tmp_path, workers=2, engine_threads=1, rate_limit=0,
                                      purpose_default="optional", purpose_overrides={"strict": "required"}))
    try:
        with httpx.Client(base_url=live.url, timeout=120, headers={"Authorization": f"Bearer {admin}"}) as c:
            made = c.post("/v1/collections", json={"name": "p", "lead_floor_fmr": 1e-4, "policy": {
                "allowed_modes": ["identify"], "purpose_required": True}})
            assert made.status_code == 201, made.text
            assert made.json()["policy"]["allowed_modes"] == ["identify"] and made.json()["lead_floor_fmr"] == 1e-4
            assert c.post("/v1/collections", json={"name": "q", "policy": {"bogus": 1}}).status_code == 422
            assert c.post("/v1/collections", json={"name": "strict"}).status_code == 201
            for person in PEOPLE[:3]:
                for name in ("p", "strict"):
                    resp = c.post(f"/v1/collections/{name}/faces", files={"image": portrait(person).read_bytes()},
                                  data={"person_id": person})
                    assert resp.status_code == 200, resp.text
            grants = {"p": ["search", "read"], "strict": ["search"]}
            searcher = {"Authorization": f"Bearer {make_key(tmp_path, name='desk 4', grants=grants)}"}
            probe = {"image": portrait(PEOPLE[0], "b").read_bytes()}

            def search(name: str, headers: dict[str, str] | None = None, **data: str) -> httpx.Response:
                return c.post(f"/v1/collections/{name}/search/image", files=probe, data=data, headers=headers)

            # enforcement: the policy's purpose rule, its modes, its floor; the server's own purpose rule still holds
            no_purpose = search("p", searcher)
            assert no_purpose.status_code == 403 and no_purpose.json()["error"]["code"] == "policy_forbids"
            assert "requires a purpose" in no_purpose.json()["error"]["message"]
            ok = search("p", searcher, purpose="case 1")
            assert ok.status_code == 200 and ok.json()["results"][0]["matches"][0]["person_id"] == PEOPLE[0]
            assert ok.json()["results"][0]["policy_floor"] is None
            inv = search("p", searcher, purpose="case 1", mode="investigate")
            assert inv.status_code == 403 and "allows only identify searches" in inv.json()["error"]["message"]
            server_rule = search("strict", searcher)
            assert server_rule.status_code == 422 and server_rule.json()["error"]["code"] == "purpose_required"
            # reading needs the read scope; changing needs the admin scope
            seen = c.get("/v1/collections/p/policy", headers=searcher)
            assert seen.status_code == 200 and seen.json()["policy"]["purpose_required"] is True
            refused = c.patch("/v1/collections/p/policy", json={"allowed_modes": ["identify", "investigate"]},
                              headers=searcher)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
            assert c.put("/v1/collections/p/lead-floor", json={"lead_floor_fmr": 1e-2}, headers=searcher
                         ).status_code == 403
            assert c.get("/v1/collections/strict/policy", headers=searcher).status_code == 403  # search only
            for bad in ({}, {"bogus": True}, {"max_fpir": 0}, {"allowed_modes": []}, {"retention_days": None}):
                assert c.patch("/v1/collections/p/policy", json=bad).status_code == 422, bad
            changed = c.patch("/v1/collections/p/policy", json={"allowed_modes": ["identify", "investigate"],
                                                                  "max_fpir": 3e-4})
            assert changed.status_code == 200, changed.text
            assert changed.json()["policy"]["allowed_modes"] == ["identify", "investigate"]
            assert changed.json()["policy"]["max_fpir"] == 3e-4 and changed.json()["policy"]["purpose_required"]
            floor = c.put("/v1/collections/p/lead-floor", json={"lead_floor_fmr": 1e-3})
            assert floor.status_code == 200 and floor.json()["lead_floor_fmr"] == 1e-3
            assert c.get("/v1/collections/p").json()["policy"]["max_fpir"] == 3e-4
            # the change holds for the next search: investigate allowed, identify floored
            assert search("p", searcher, purpose="case 2", mode="investigate").status_code == 200
            loose = search("p", searcher, purpose="case 2", max_fpir="0.003")
            assert loose.status_code == 403 and "no looser than max_fpir 0.0003" in loose.json()["error"]["message"]
            floored = search("p", searcher, purpose="case 2").json()["results"][0]
            assert floored["policy_floor"] == {"max_fpir": 3e-4, "max_fmr": None, "applied": True}
            assert floored["max_fpir"] == 3e-4
            by_face = c.post("/v1/collections/p/search/face", headers=searcher, json={
                "face_id": floored["matches"][0]["face_id"], "max_fpir": 0.003, "purpose": "case 3"})
            assert by_face.status_code == 403 and by_face.json()["error"]["code"] == "policy_forbids"
    finally:
        live.stop()
    changes = [a for a in _actions(tmp_path) if a["action"] in ("policy_changed", "lead_floor_changed")]
    assert [a["action"] for a in changes] == ["policy_changed", "lead_floor_changed"]
    assert all(a["key_id"] is not None and a["actor"]["name"] == "admin desk" for a in changes)
    assert changes[0]["before"]["max_fpir"] is None and changes[0]["after"]["max_fpir"] == 3e-4
    assert (changes[1]["before"], changes[1]["after"]) == (1e-4, 1e-3)
    refusals = [a for a in _actions(tmp_path) if a.get("error") and a["collection"] == "p"]
    assert refusals and all(a["error"]["code"] == "policy_forbids" for a in refusals)  # refused searches logged
    other = facelens.Engine(home=str(tmp_path), threads=1)  # another process's engine sees the change
    try:
        assert other.collection_policy("p").max_fpir == 3e-4 and other.lead_floor("p") == 1e-3
    finally:
        other.close()


# -- the CLI (real processes) ----------------------------------------------------------------------

def _cli(home: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACELENS_ACTOR": "officer-12", "FACELENS_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "facelens", *args, "--home", str(home)], capture_output=True,
                       text=True, timeout=300, env=env)
    return p.returncode, p.stdout, p.stderr


def test_policy_cli_create_enforce_change_and_lead_floor(tmp_path: Path) -> None:
    home = tmp_path / "h"
    code, out, err = _cli(home, "collection", "create", "c", "--allow-modes", "identify", "--purpose-required",
                          "--max-fpir", "3e-4", "--lead-floor", "1e-4", "--no-face-crops", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["policy"]["allowed_modes"] == ["identify"] and made["policy"]["purpose_required"]
    assert made["policy"]["max_fpir"] == 3e-4 and not made["policy"]["face_crops"] and made["lead_floor_fmr"] == 1e-4
    bad_file = tmp_path / "bad.json"
    bad_file.write_text('{"allowed_modes": ["identify"], "bogus": 1}')
    code, _, err = _cli(home, "collection", "create", "d", "--policy-file", str(bad_file))
    assert code == 2 and "unknown policy field(s) bogus" in err
    good_file = tmp_path / "good.json"
    good_file.write_text('{"allowed_modes": ["investigate"], "retention_days": 7}')
    code, out, err = _cli(home, "collection", "create", "e", "--policy-file", str(good_file), "--retention-days",
                          "3", "--json")
    assert code == 0, err
    assert json.loads(out)["policy"]["allowed_modes"] == ["investigate"]
    assert json.loads(out)["policy"]["retention_days"] == 3.0  # the flag wins over the file
    assert _cli(home, "index", "c", str(portrait(PEOPLE[0])), str(portrait(PEOPLE[1])), "--workers", "1")[0] == 0
    probe = str(portrait(PEOPLE[0], "b"))
    code, _, err = _cli(home, "search", "c", probe)
    assert code == 5 and "requires a purpose" in err
    code, _, err = _cli(home, "search", "c", probe, "--purpose", "case 9", "--mode", "investigate")
    assert code == 5 and "allows only identify searches" in err
    code, _, err = _cli(home, "search", "c", probe, "--purpose", "case 9", "--max-fpir", "0.003")
    assert code == 5 and "no looser than max_fpir 0.0003" in err
    code, out, err = _cli(home, "search", "c", probe, "--purpose", "case 9", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["policy_floor"] == {"max_fpir": 3e-4, "max_fmr": None, "applied": True}
    assert found["matches"][0]["person_id"] is None and found["max_fpir"] == 3e-4
    # changing it: bad settings change nothing; good ones are logged with the CLI actor
    for bad in ("bogus=1", "max_fpir=abc", "max_fpir", "allowed_modes=guess"):
        code, _, err = _cli(home, "collection", "policy", "c", "--set", bad)
        assert code == 2, (bad, err)
    code, out, err = _cli(home, "collection", "policy", "c", "--set", "allowed_modes=identify,investigate",
                          "--set", "max_fpir=null", "--json")
    assert code == 0, err
    new = json.loads(out)
    assert new["policy"]["allowed_modes"] == ["identify", "investigate"] and new["policy"]["max_fpir"] is None
    assert new["policy"]["purpose_required"]  # kept
    code, out, _ = _cli(home, "collection", "policy", "c")
    assert code == 0 and 'allowed_modes: ["identify", "investigate"]' in out and "lead floor" in out
    assert _cli(home, "search", "c", probe, "--purpose", "case 10", "--mode", "investigate")[0] == 0
    code, out, err = _cli(home, "collection", "lead-floor", "c", "1e-3", "--json")
    assert code == 0 and json.loads(out)["lead_floor_fmr"] == 1e-3, err
    assert _cli(home, "collection", "lead-floor", "c", "0")[0] == 2
    assert _cli(home, "collection", "policy", "nope")[0] == 3
    changes = [a for a in _actions(home) if a["action"] in ("policy_changed", "lead_floor_changed")]
    assert [a["action"] for a in changes] == ["policy_changed", "lead_floor_changed"]
    assert all(a["actor"] == {"kind": "cli", "id": "officer-12", "name": None} for a in changes)
    assert changes[0]["before"]["max_fpir"] == 3e-4 and changes[1]["before"] == 1e-4
    # a change made from Python is seen by the next CLI process, and the other way round
    e = facelens.Engine(home=str(home), threads=1)
    try:
        assert e.collection_policy("c").max_fpir is None and e.lead_floor("c") == 1e-3
        e.set_collection_policy("c", {"allowed_modes": ["investigate"]}, actor=Actor.python("script"))
    finally:
        e.close()
    code, _, err = _cli(home, "search", "c", probe, "--purpose", "case 11")
    assert code == 5 and "not identify" in err
