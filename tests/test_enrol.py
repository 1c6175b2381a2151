"""Enrolment care: indexing for a person gives them only the image's largest face, and refuses a face that
does not match their stored faces at a stated rate (Python API, real HTTP, the CLI as a real process), on
the bundled portraits: a group photo made by pasting two portraits side by side, and a different person's
face offered as someone else's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

import facelens
from facelens.accountability.log import read_entries
from facelens.engine import DEFAULT_ENROL_MAX_FMR
from facelens.errors import InvalidArgumentError
from facelens.server import ServerSettings
from facelens.types import RefusalReason

from ._service import LiveService, make_key
from .conftest import PEOPLE, portrait

ROOT = Path(__file__).resolve().parents[1]
SUBJECT, BYSTANDER, STRANGER = PEOPLE[0], PEOPLE[2], PEOPLE[5]


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SUBJECT's first portrait (450x550) with BYSTANDER's, shrunk to 60%, pasted to its right: two faces,
    SUBJECT's the larger."""
    left = Image.open(portrait(SUBJECT, "a")).convert("RGB")
    right = Image.open(portrait(BYSTANDER, "a")).convert("RGB")
    right = right.resize((int(right.width * 0.6), int(right.height * 0.6)))
    canvas = Image.new("RGB", (left.width + right.width, left.height), (128, 128, 128))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, left.height - right.height))
    path = tmp_path_factory.mktemp("enrol-images") / "group.jpg"
    canvas.save(path, quality=95)
    return path


@pytest.fixture
def eng(tmp_path: Path) -> Iterator[facelens.Engine]:
    e = facelens.Engine(home=str(tmp_path / "home"), threads=2)
    e.create_collection("c")
    yield e
    e.close()


def test_enrol_gives_the_person_only_the_largest_face_of_a_group(eng: facelens.Engine, group: Path) -> None:
    r = eng.index_faces("c", group, person_id=SUBJECT)
    assert len(r.indexed) == 1 and r.indexed[0]["person_id"] == SUBJECT
    assert r.indexed[0]["bbox"][2] <= 450  # the left portrait's face
    (other,) = r.unindexed
    assert other.refusal_reasons == (RefusalReason.NOT_THE_LARGEST_FACE,) and other.bbox.left >= 450
    assert r.to_dict()["unindexed"][0]["refusal_reasons"] == ["NOT_THE_LARGEST_FACE"]
    (check,) = r.enrolment
    assert check.passed and check.existing_faces == 0 and "first" in check.reason
    assert eng.list_persons("c") == [(SUBJECT, 1)]
    # the bystander was never given to the subject: a search with their face finds nobody of SUBJECT's
    (s,) = eng.search_faces_by_image("c", portrait(BYSTANDER, "b"), mode="investigate")
    assert not any(c.person_id == SUBJECT for c in s.candidates)


def test_enrol_all_faces_keeps_the_old_behaviour_for_a_new_person(eng: facelens.Engine, group: Path) -> None:
    r = eng.index_faces("c", group, person_id="both", all_faces=True)
    assert len(r.indexed) == 2 and not r.unindexed and all(c.passed for c in r.enrolment)
    assert eng.list_persons("c") == [("both", 2)]
    # without a person, every acceptable face is indexed as before (and the enrolment options are refused)
    plain = eng.index_faces("c", group, external_image_id="group-plain")
    assert len(plain.indexed) == 2 and plain.enrolment == ()
    for bad in ({"all_faces": True}, {"enrol_max_fmr": 1e-3}, {"match_check": False}):
        with pytest.raises(InvalidArgumentError, match="give person_id"):
            eng.index_faces("c", group, external_image_id="x", **bad)  # type: ignore[arg-type]


def test_enrol_refuses_a_face_that_does_not_match_the_person(eng: facelens.Engine, group: Path) -> None:
    eng.index_faces("c", portrait(SUBJECT, "a"), person_id=SUBJECT)
    cal = eng.collection_calibration("c")
    threshold = eng.operating_point(max_fmr=DEFAULT_ENROL_MAX_FMR, calibration=cal).threshold
    # the same person's other photo matches and joins them
    same = eng.index_faces("c", portrait(SUBJECT, "b"), person_id=SUBJECT)
    (ok,) = same.enrolment
    assert len(same.indexed) == 1 and ok.passed and ok.best_score is not None and ok.best_score >= threshold
    assert ok.threshold == threshold and ok.existing_faces == 1 and "matches" in ok.reason
    # another person's face offered as SUBJECT's is refused, with the best score and the threshold named
    wrong = eng.index_faces("c", portrait(STRANGER, "a"), person_id=SUBJECT)
    assert wrong.indexed == () and wrong.unindexed[0].refusal_reasons == (RefusalReason.NO_MATCH_WITH_PERSON,)
    (bad,) = wrong.enrolment
    assert not bad.passed and bad.existing_faces == 2 and bad.best_score is not None and bad.best_score < threshold
    assert f"best score {bad.best_score:.3f}" in bad.reason and f"threshold {threshold:.3f}" in bad.reason
    assert wrong.to_dict()["enrolment"][0]["passed"] is False
    assert eng.list_persons("c") == [(SUBJECT, 2)]
    # the refused image left nothing behind: it can be indexed again, for its own person
    mine = eng.index_faces("c", portrait(STRANGER, "a"), person_id=STRANGER)
    assert not mine.already_indexed and len(mine.indexed) == 1
    # all_faces on a group: the subject's face matches, the bystander's is refused by the check
    g = eng.index_faces("c", group, person_id=SUBJECT, all_faces=True)
    assert len(g.indexed) == 1 and [f.refusal_reasons for f in g.unindexed] == [(RefusalReason.NO_MATCH_WITH_PERSON,)]
    # a looser stated rate is used as stated; turning the check off stores the face and says so
    loose = eng.index_faces("c", portrait(STRANGER, "b"), person_id=SUBJECT, enrol_max_fmr=1.0)
    assert loose.enrolment[0].max_fmr == 1.0 and loose.enrolment[0].threshold is not None
    who = facelens.Actor.python("enrolment desk")
    forced = eng.index_faces("c", portrait(BYSTANDER, "b"), person_id=SUBJECT, match_check=False, actor=who)
    assert dict(eng.list_persons("c"))[SUBJECT] == 5
    (off,) = forced.enrolment
    assert len(forced.indexed) == 1 and off.passed and not off.checked and "turned off" in off.reason
    assert forced.to_dict()["enrolment"][0]["checked"] is False
    assert "bbox" not in off.to_record() and off.to_record()["checked"] is False  # what the log may hold
    # the log records the override with who made it, and a refused enrolment too
    first = eng.index_faces("c", portrait(BYSTANDER, "a"), person_id="fresh", actor=who)
    assert len(first.indexed) == 1 and first.enrolment[0].existing_faces == 0  # a new person: nothing to check
    refused = eng.index_faces("c", portrait(SUBJECT, "b"), external_image_id="as-fresh", person_id="fresh",
                              actor=who)
    assert refused.indexed == ()
    entries = [dict(e.body) for e in read_entries(eng.home / "service" / "search-log.sqlite")
               if e.body["action"] == "faces_indexed"]
    assert entries[0]["actor"]["name"] is None and entries[0]["actor"]["id"] == "enrolment desk"
    assert entries[0]["enrolment"][0]["checked"] is False and entries[0]["face_ids"] == [forced.indexed[0]["face_id"]]
    assert entries[-1]["face_ids"] == [] and entries[-1]["enrolment"][0]["passed"] is False
    assert entries[-1]["refused"] == [{"reasons": ["NO_MATCH_WITH_PERSON"]}]
    assert all("bbox" not in c for e in entries for c in e["enrolment"])
    with pytest.raises(InvalidArgumentError, match="enrol_max_fmr"):
        eng.index_faces("c", portrait(STRANGER, "b"), person_id=SUBJECT, enrol_max_fmr=0)


def test_enrol_over_http_refuses_the_bystander_and_the_stranger(tmp_path: Path, group: Path) -> None:
    token = make_key(tmp_path, name="admin", admin=True)
    live = LiveService(ServerSettings(home=tmp_path, workers=2, engine_threads=1, rate_limit=0))
    try:
        with httpx.Client(base_url=live.url, timeout=120, headers={"Authorization": f"Bearer {token}"}) as c:
            assert c.post("/v1/collections", json={"name": "h"}).status_code == 201

            def index(path: Path, **fields: str) -> dict[str, object]:
                resp = c.post("/v1/collections/h/faces", files={"image": path.read_bytes()}, data=fields)
                assert resp.status_code == 200, resp.text
                body: dict[str, object] = resp.json()
                return body

            first = index(group, person_id=SUBJECT)
            assert len(first["indexed"]) == 1  # type: ignore[arg-type]
            assert first["unindexed"][0]["refusal_reasons"] == ["NOT_THE_LARGEST_FACE"]  # type: ignore[index]
            wrong = index(portrait(STRANGER, "a"), person_id=SUBJECT)
            assert wrong["indexed"] == [] and wrong["enrolment"][0]["passed"] is False  # type: ignore[index]
            assert "does not match" in wrong["enrolment"][0]["reason"]  # type: ignore[index]
            forced = index(portrait(STRANGER, "a"), person_id=SUBJECT, match_check="false")
            assert forced["enrolment"][0]["checked"] is False and len(forced["indexed"]) == 1  # type: ignore[index]
            bad = c.post("/v1/collections/h/faces", files={"image": group.read_bytes()}, data={"all_faces": "true"})
            assert bad.status_code == 422 and "person_id" in bad.json()["error"]["message"]
    finally:
        live.stop()


def test_enrol_cli_largest_face_match_check_and_override(tmp_path: Path, group: Path) -> None:
    home = tmp_path / "h"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACELENS_THREADS": "1"}

    def cli(*args: str) -> tuple[int, str, str]:
        p = subprocess.run([sys.executable, "-m", "facelens", *args, "--home", str(home)], capture_output=True,
                           text=True, timeout=300, env=env)
        return p.returncode, p.stdout, p.stderr

    assert cli("collection", "create", "c")[0] == 0
    code, out, err = cli("index", "c", str(group), "--person", SUBJECT, "--json")
    assert code == 0, err
    (img,) = json.loads(out)["images"]
    assert len(img["indexed"]) == 1 and img["unindexed"][0]["refusal_reasons"] == ["NOT_THE_LARGEST_FACE"]
    code, out, err = cli("index", "c", str(portrait(STRANGER, "a")), "--person", SUBJECT)
    assert code == 0, err
    assert "0 indexed, 1 refused (NO_MATCH_WITH_PERSON)" in out and "does not match" in out and "threshold" in out
    code, out, err = cli("index", "c", str(portrait(STRANGER, "a")), "--person", SUBJECT, "--no-match-check",
                         "--json")
    assert code == 0, err
    (img,) = json.loads(out)["images"]
    assert len(img["indexed"]) == 1 and img["enrolment"][0]["checked"] is False
    code, _, err = cli("index", "c", str(group), "--all-faces")
    assert code == 2 and "--person" in err
    code, out, _ = cli("person", "list", "c", "--json")
    assert json.loads(out)["persons"] == [{"person_id": SUBJECT, "faces": 2}]
