"""The two search modes, identify and investigate, through the Python API, the CLI (a real process) and the
service (real HTTP), on the bundled portraits: an investigation lists ranked leads above the collection's
lead floor, each saying what its score means in that collection, and never calls them matches."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import facelens
from facelens.engine import DEFAULT_LEAD_FLOOR_FMR, DEFAULT_MAX_CANDIDATES
from facelens.errors import CollectionNotFoundError, InvalidArgumentError
from facelens.server import ServerSettings
from facelens.types import LEAD_NOTICE, SearchMode, SearchResult

from ._service import LiveService, make_key
from .conftest import PEOPLE, portrait

ROOT = Path(__file__).resolve().parents[1]
CANDIDATE_KEYS = {"rank", "face_id", "external_image_id", "person_id", "score", "fmr", "fmr_extrapolated",
                  "expected_strangers", "meaning", "bbox", "review_item_id"}
# These tests are about the modes: their collections disclose who the leads are to the searcher (the
# default withholds it until review: tests/test_review.py)
DISCLOSED = {"disclose_before_review": True}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("investigate-home")


@pytest.fixture(scope="module")
def eng(home: Path) -> Iterator[facelens.Engine]:
    """An engine with two collections: ``firsts`` (each person's first portrait, with the person id) and
    ``all`` (both portraits of everyone)."""
    e = facelens.Engine(home=str(home), threads=2)
    e.create_collection("firsts", policy=DISCLOSED)
    e.create_collection("all", policy=DISCLOSED)
    for person in PEOPLE:
        e.index_faces("firsts", portrait(person, "a"), external_image_id=f"{person}_a", person_id=person)
        for which in "ab":
            e.index_faces("all", portrait(person, which), external_image_id=f"{person}_{which}", person_id=person)
    yield e
    e.close()


def _check_leads(eng: facelens.Engine, collection: str, r: SearchResult) -> None:
    """What every investigation result must say: ranked leads above the floor, each labelled truthfully."""
    assert r.mode is SearchMode.INVESTIGATE and r.matches == ()
    assert [c.rank for c in r.candidates] == list(range(1, len(r.candidates) + 1))
    assert [c.score for c in r.candidates] == sorted((c.score for c in r.candidates), reverse=True)
    assert r.max_candidates is not None and len(r.candidates) <= r.max_candidates
    assert r.operating_point.max_fmr == eng.lead_floor(collection)
    cal = eng.collection_calibration(collection)
    for c in r.candidates:
        assert c.score >= r.threshold
        assert (c.fmr, c.fmr_extrapolated) == cal.fmr(c.score, eng.policy)
        assert c.expected_strangers == pytest.approx(r.collection_size * c.fmr, rel=1e-3)
        assert c.meaning.startswith(f"Lead {c.rank}, not a match") and f"{r.collection_size:,} faces" in c.meaning
        assert "must be reviewed by a person before anything is done" in c.meaning
        assert ("extrapolated" in c.meaning) == c.fmr_extrapolated
    d = r.to_dict()
    assert "matches" not in d and d["mode"] == "investigate" and d["notice"] == LEAD_NOTICE
    assert d["lead_floor_fmr"] == eng.lead_floor(collection) and d["max_candidates"] == r.max_candidates
    assert all(set(c) == CANDIDATE_KEYS for c in d["candidates"])
    json.dumps(d)


def test_investigation_finds_each_mate_first_among_labelled_leads(eng: facelens.Engine) -> None:
    assert eng.lead_floor("firsts") == DEFAULT_LEAD_FLOOR_FMR
    for person in PEOPLE:
        (r,) = eng.search_faces_by_image("firsts", portrait(person, "b"), mode="investigate")
        _check_leads(eng, "firsts", r)
        assert r.max_candidates == DEFAULT_MAX_CANDIDATES and r.collection_size == len(PEOPLE)
        assert r.candidates[0].person_id == person, person
        # the lead floor is looser than the identification threshold: leads reach further down the scores
        (ident,) = eng.search_faces_by_image("firsts", portrait(person, "b"))
        assert r.threshold <= ident.threshold


def test_identify_is_the_default_and_says_so(eng: facelens.Engine) -> None:
    (r,) = eng.search_faces_by_image("firsts", portrait("C001079", "b"))
    assert r.mode is SearchMode.IDENTIFY and r.candidates == () and r.max_candidates is None
    d = r.to_dict()
    assert d["mode"] == "identify" and "candidates" not in d and "notice" not in d
    assert [m["person_id"] for m in d["matches"]] == ["C001079"]
    (same,) = eng.search_faces_by_image("firsts", portrait("C001079", "b"), mode=SearchMode.IDENTIFY)
    assert same.to_dict()["matches"] == d["matches"]


def test_the_lead_floor_is_the_collections_and_decides_how_far_the_list_goes(eng: facelens.Engine,
                                                                             home: Path) -> None:
    info = eng.create_collection("loose", lead_floor_fmr=1.0, policy=DISCLOSED)  # every face is a lead
    assert info.lead_floor_fmr == 1.0 and eng.describe_collection("loose").to_dict()["lead_floor_fmr"] == 1.0
    for person in PEOPLE:
        eng.index_faces("loose", portrait(person, "a"), person_id=person)
    (r,) = eng.search_faces_by_image("loose", portrait("B000444", "b"), mode="investigate")
    _check_leads(eng, "loose", r)
    assert len(r.candidates) == len(PEOPLE) and r.candidates[0].person_id == "B000444"
    # strangers far down the list: as many strangers as that are expected to score as high among 8 faces
    last = r.candidates[-1]
    assert last.expected_strangers >= 1 and "does not single this face out" in last.meaning
    (three,) = eng.search_faces_by_image("loose", portrait("B000444", "b"), mode="investigate", max_candidates=3)
    assert [c.face_id for c in three.candidates] == [c.face_id for c in r.candidates[:3]]

    # set by another engine (its own connection): seen by this one from its next search
    other = facelens.Engine(home=str(home), threads=1)
    try:
        assert other.set_lead_floor("loose", 1e-4) == 1e-4
    finally:
        other.close()
    assert eng.lead_floor("loose") == 1e-4
    (strict,) = eng.search_faces_by_image("loose", portrait("B000444", "b"), mode="investigate")
    assert strict.operating_point.max_fmr == 1e-4 and strict.threshold > r.threshold
    assert all(c.fmr <= 1e-4 for c in strict.candidates) and len(strict.candidates) < len(PEOPLE)
    eng.delete_collection("loose")


@pytest.mark.parametrize("bad", [0.0, -1e-3, 1.5, math.nan, math.inf])
def test_a_lead_floor_that_is_not_a_rate_is_refused(eng: facelens.Engine, bad: float) -> None:
    with pytest.raises(InvalidArgumentError, match="lead_floor_fmr"):
        eng.create_collection("bad-floor", lead_floor_fmr=bad)
    assert "bad-floor" not in eng.list_collections()
    with pytest.raises(InvalidArgumentError, match="lead_floor_fmr"):
        eng.set_lead_floor("firsts", bad)
    assert eng.lead_floor("firsts") == DEFAULT_LEAD_FLOOR_FMR
    with pytest.raises(CollectionNotFoundError):
        eng.set_lead_floor("no-such-collection", 1e-3)


@pytest.mark.parametrize(("mode", "options", "message"), [
    ("investigate", {"max_fpir": 0.01}, "max_fpir belongs to identify mode"),
    ("investigate", {"max_fmr": 1e-3}, "max_fmr belongs to identify mode"),
    ("investigate", {"min_score": 0.3}, "min_score belongs to identify mode"),
    ("investigate", {"max_results": 5}, "max_results belongs to identify mode"),
    ("investigate", {"max_candidates": 0}, "max_candidates must be >= 1"),
    ("identify", {"max_candidates": 5}, "max_candidates belongs to investigate mode"),
    ("identify", {"max_results": 0}, "max_results must be >= 1"),
    ("lookup", {}, "unknown search mode 'lookup'"),
])
def test_each_option_belongs_to_its_mode(eng: facelens.Engine, mode: str, options: dict[str, Any],
                                         message: str) -> None:
    for call in (lambda: eng.search_faces_by_image("firsts", portrait("B000444", "b"), mode=mode, **options),
                 lambda: eng.search_persons_by_image("firsts", portrait("B000444", "b"), mode=mode, **options),
                 lambda: eng.search_faces("firsts", "no-such-face", mode=mode, **options)):
        with pytest.raises(InvalidArgumentError, match=message):
            call()


def test_investigation_by_face_id_and_for_persons(eng: facelens.Engine) -> None:
    faces, _ = eng.list_faces("all", limit=100)
    for person in PEOPLE[:4]:
        first = next(f for f in faces if f.external_image_id == f"{person}_a")
        r = eng.search_faces("all", first.face_id, mode="investigate", max_candidates=5)
        _check_leads(eng, "all", r)
        assert first.face_id not in {c.face_id for c in r.candidates}
        assert r.candidates[0].external_image_id == f"{person}_b" and r.to_dict()["searched_face_id"] == first.face_id
        p = eng.search_persons_by_image("all", portrait(person, "b"), mode="investigate")
        _check_leads(eng, "all", p)
        ids = [c.person_id for c in p.candidates]
        assert ids[0] == person and len(ids) == len(set(ids)) and None not in ids


# -- the CLI, as a user runs it ----------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "facelens", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def test_cli_investigate_mode(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    made = _cli("collection", "create", "c", "--home", home, "--lead-floor", "1", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["lead_floor_fmr"] == 1.0
    with facelens.Engine(home=home, threads=1) as eng:
        eng.set_collection_policy("c", DISCLOSED)
    for person in PEOPLE[:4]:
        assert _cli("index", "c", str(portrait(person, "a")), "--person", person, "--home", home).returncode == 0
    probe = str(portrait(PEOPLE[0], "b"))
    out = _cli("search", "c", probe, "--home", home, "--mode", "investigate", "--max-candidates", "2", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["mode"] == "investigate" and "matches" not in doc and doc["notice"] == LEAD_NOTICE
    assert doc["lead_floor_fmr"] == 1.0 and doc["max_candidates"] == 2 and doc["collection_size"] == 4
    assert [c["rank"] for c in doc["candidates"]] == [1, 2] and doc["candidates"][0]["person_id"] == PEOPLE[0]
    assert all(set(c) == CANDIDATE_KEYS for c in doc["candidates"])

    text = _cli("search", "c", probe, "--home", home, "--mode", "investigate")
    assert text.returncode == 0, text.stderr
    assert "lead 1 " in text.stdout and "must be reviewed by a person before anything is done" in text.stdout
    assert "expected strangers this high" in text.stdout
    said = text.stdout.replace("not a match", "").replace("not matches", "").replace("false-match", "")
    assert "match" not in said  # leads are never called matches
    persons = _cli("person", "search", "c", probe, "--home", home, "--mode", "investigate", "--json")
    assert persons.returncode == 0 and json.loads(persons.stdout)["candidates"][0]["person_id"] == PEOPLE[0]
    ident = _cli("search", "c", probe, "--home", home, "--json")
    assert ident.returncode == 0 and json.loads(ident.stdout)["mode"] == "identify"

    for bad, says in ((["--mode", "investigate", "--max-fpir", "0.01"], "max_fpir belongs to identify mode"),
                      (["--max-candidates", "3"], "max_candidates belongs to investigate mode"),
                      (["--mode", "guess"], "'guess' is not one of")):
        refused = _cli("search", "c", probe, "--home", home, *bad)
        assert refused.returncode == 2 and says in refused.stderr and "Traceback" not in refused.stderr, refused
    floor = _cli("collection", "create", "d", "--home", home, "--lead-floor", "0")
    assert floor.returncode == 2 and "--lead-floor" in floor.stderr and "Traceback" not in floor.stderr


# -- the service, over real HTTP ---------------------------------------------------------------------

def test_service_investigations_are_answered_and_logged_with_their_mode(tmp_path: Path) -> None:
    admin_token = make_key(tmp_path, name="admin", admin=True)
    live = LiveService(ServerSettings(home=tmp_path, workers=2, engine_threads=1, rate_limit=0))
    try:
        admin = httpx.Client(base_url=live.url, timeout=120, headers={"Authorization": f"Bearer {admin_token}"})
        assert admin.post("/v1/collections", json={"name": "inv"}).status_code == 201
        live.app.state.services.engine.set_collection_policy("inv", DISCLOSED)
        for person in PEOPLE:
            r = admin.post("/v1/collections/inv/faces", files={"image": portrait(person, "a").read_bytes()},
                           data={"person_id": person, "external_image_id": f"{person}_a"})
            assert r.status_code in (200, 201), r.text
        searcher = httpx.Client(base_url=live.url, timeout=120, headers={
            "Authorization": f"Bearer {make_key(tmp_path, name='s', grants={'inv': ['search']})}"})

        def logged(seq: int) -> dict[str, Any]:
            (entry,) = admin.get("/v1/log", params={"after": seq - 1, "limit": 1}).json()["entries"]
            return dict(entry)

        probe = portrait("C001085", "b").read_bytes()
        r = searcher.post("/v1/collections/inv/search/image", files={"image": probe},
                          data={"purpose": "case 7", "mode": "investigate", "max_candidates": "3"})
        assert r.status_code == 200, r.text
        (result,) = r.json()["results"]
        assert result["mode"] == "investigate" and "matches" not in result and result["notice"] == LEAD_NOTICE
        assert result["candidates"][0]["person_id"] == "C001085" and len(result["candidates"]) <= 3
        assert all(set(c) == CANDIDATE_KEYS for c in result["candidates"])
        entry = logged(r.json()["log_entry"]["seq"])
        assert entry["mode"] == "investigate" and entry["options"]["mode"] == "investigate"
        assert entry["options"]["max_candidates"] == 3 and entry["operating_point"]["lead_floor_fmr"] == 1e-3
        logged_leads = entry["results"][0]["candidates"]
        assert [(c["rank"], c["face_id"], c["person_id"], c["score"], c["fmr"], c["expected_strangers"])
                for c in logged_leads] == [(c["rank"], c["face_id"], c["person_id"], c["score"], c["fmr"],
                                            c["expected_strangers"]) for c in result["candidates"]]
        assert all("meaning" not in c and "bbox" not in c and "external_image_id" not in c for c in logged_leads)

        ident = searcher.post("/v1/collections/inv/search/image", files={"image": probe}, data={"purpose": "case 7"})
        assert ident.status_code == 200 and ident.json()["results"][0]["mode"] == "identify"
        assert logged(ident.json()["log_entry"]["seq"])["mode"] == "identify"

        face_id = result["candidates"][0]["face_id"]
        by_face = searcher.post("/v1/collections/inv/search/face",
                                json={"face_id": face_id, "purpose": "case 7", "mode": "investigate"})
        assert by_face.status_code == 200, by_face.text
        assert face_id not in {c["face_id"] for c in by_face.json()["candidates"]}
        assert logged(by_face.json()["log_entry"]["seq"])["mode"] == "investigate"
        persons = searcher.post("/v1/collections/inv/search/persons", files={"image": probe},
                                data={"purpose": "case 7", "mode": "investigate"})
        assert persons.status_code == 200 and persons.json()["candidates"][0]["person_id"] == "C001085"

        mixed = searcher.post("/v1/collections/inv/search/image", files={"image": probe},
                              data={"purpose": "case 7", "mode": "investigate", "max_fpir": "0.01"})
        assert mixed.status_code == 422 and mixed.json()["error"]["code"] == "invalid_argument"
        assert "max_fpir belongs to identify mode" in mixed.json()["error"]["message"]
        head = admin.get("/v1/log", params={"limit": 1}).json()["head"]["seq"]
        failed = logged(head)
        assert failed["mode"] == "investigate" and failed["error"]["code"] == "invalid_argument"
        unknown = searcher.post("/v1/collections/inv/search/face",
                                json={"face_id": face_id, "purpose": "case 7", "mode": "guess"})
        assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "invalid_request"
    finally:
        live.stop()


@pytest.mark.parametrize(("expected", "says"), [
    (4.1, "the score alone does not single this face out"),
    (0.23, "one search in about 4.3 for someone absent would show a stranger this high"),
    (8e-12, "strangers rarely score this high: one search in about 120 billion for someone absent"),
])
def test_a_leads_meaning_reads_its_expected_strangers_in_words(expected: float, says: str) -> None:
    from facelens.engine import lead_meaning

    text = lead_meaning(2, 0.5, expected / 8, False, expected, 8)
    assert text.startswith("Lead 2, not a match: score 0.500. Among the 8 faces searched") and says in text
    assert "measured on the calibration's pairs of strangers" in text and text.endswith(
        "It must be reviewed by a person before anything is done.")
