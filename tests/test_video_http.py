"""Video search jobs over real HTTP (StartFaceSearch / GetFaceSearch): upload, poll the job's status and
progress, read the result in facelens's and Rekognition's shape, cancel; bad uploads answered 4xx; the
upload deleted when the job ends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import facelens
from facelens.server import ServerSettings

from ._service import LiveService, make_key
from ._stream_sources import ENTERS_S, LEAVES_S, PERSON, make_stream_video
from .conftest import portrait


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_stream_video(tmp_path_factory.mktemp("video-http") / "person.mp4", size=(480, 270))


def wait_job(c: httpx.Client, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = c.get(f"/v1/collections/people/video-searches/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still running after {timeout_s} s")


def test_video_search_job_end_to_end(video: Path, tmp_path: Path) -> None:
    engine = facelens.Engine(threads=1, home=tmp_path)
    engine.create_collection("people")
    for person in [PERSON, "B000444"]:
        engine.index_faces("people", portrait(person, "b"), external_image_id=person, person_id=person)
    engine.close()
    token = make_key(tmp_path, name="analyst", grants={"people": ["search"]})
    other = make_key(tmp_path, name="other", grants={"people": ["search"]})
    live = LiveService(ServerSettings(home=tmp_path, workers=2, engine_threads=1, rate_limit=0,
                                      max_request_bytes=2 * 1024 * 1024))
    jobs_dir = tmp_path / "service" / "video-jobs"
    try:
        with httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
            r = c.post("/v1/collections/people/video-searches", files={"video": ("door.mp4", video.read_bytes())},
                       data={"purpose": "case 9", "every": "3"})
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            assert r.json()["status"] in ("queued", "running")
            job = wait_job(c, job_id)
            assert job["status"] == "succeeded", job
            assert job["progress"]["fraction"] == pytest.approx(1.0, abs=0.1)
            tracks = job["result"]["tracks"]
            assert len(tracks) == 1
            t = tracks[0]
            assert abs(t["start_s"] - ENTERS_S) <= 0.05 and abs(t["end_s"] - LEAVES_S) <= 0.05
            assert t["search"]["matches"][0]["person_id"] == PERSON
            rek = c.get(f"/v1/collections/people/video-searches/{job_id}", params={"format": "rekognition"}).json()
            assert rek["JobStatus"] == "SUCCEEDED" and rek["VideoMetadata"]["FrameWidth"] == 480
            assert rek["Persons"] and all(p["FaceMatches"][0]["Face"]["ExternalImageId"] == PERSON
                                          for p in rek["Persons"])
            first = rek["Persons"][0]
            assert abs(first["Timestamp"] - ENTERS_S * 1000) <= 50 and 0 < first["Person"]["BoundingBox"]["Width"] < 1
            assert [j["job_id"] for j in c.get("/v1/collections/people/video-searches").json()["jobs"]] == [job_id]
            assert not list(jobs_dir.iterdir())  # the upload is gone
            with httpx.Client(base_url=live.url, timeout=30, headers={"Authorization": f"Bearer {other}"}) as oc:
                assert oc.get(f"/v1/collections/people/video-searches/{job_id}").status_code == 404

            # bad uploads: 4xx at once, nothing left on disk
            r = c.post("/v1/collections/people/video-searches", files={"video": ("x.mp4", b"not a video" * 100)},
                       data={"purpose": "case 9"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_video"
            assert r.json()["error"]["message"].startswith("the upload: ")
            r = c.post("/v1/collections/people/video-searches", files={"video": ("x.mp4", video.read_bytes()[:5000])},
                       data={"purpose": "case 9"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_video"
            r = c.post("/v1/collections/people/video-searches", files={"video": ("x.mp4", video.read_bytes())})
            assert r.status_code == 422 and r.json()["error"]["code"] == "purpose_required"
            r = c.post("/v1/collections/people/video-searches", files={"video": ("x.mp4", b"0" * (3 * 1024 * 1024))},
                       data={"purpose": "case 9"})
            assert r.status_code == 413
            assert not list(jobs_dir.iterdir())

            # cancel: a second job waits for the first (one job at a time) and is cancelled before it starts
            jobs = [c.post("/v1/collections/people/video-searches", files={"video": ("d.mp4", video.read_bytes())},
                           data={"purpose": "case 9", "every": "1"}).json()["job_id"] for _ in range(2)]
            cancelled = c.delete(f"/v1/collections/people/video-searches/{jobs[1]}").json()
            assert wait_job(c, jobs[1])["status"] == "cancelled", cancelled
            assert wait_job(c, jobs[0])["status"] == "succeeded"
            assert not list(jobs_dir.iterdir())
            assert c.get("/v1/collections/people/video-searches/nope").status_code == 404
    finally:
        live.stop()
    engine = facelens.Engine(threads=1, home=tmp_path)
    searches = [e.body for e in engine.log.entries(limit=100_000) if e.body["action"] == "search_video"]
    assert searches and searches[0]["purpose"] == "case 9" and searches[0]["actor"]["name"] == "analyst"
    engine.close()
