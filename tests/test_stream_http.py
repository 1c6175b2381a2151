"""Live streams inside the service, over real HTTP on 127.0.0.1: start, status, list, Server-Sent Events read
with httpx streaming, the JSON poll, stop; scopes, the limit on streams, bad sources; streams stopped (and
their ends recorded) when the service shuts down. Sources: ``ffmpeg -listen 1`` serving MPEG-TS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import facelens
from facelens.server import ServerSettings
from facelens.server.routes import video as video_routes

from ._service import LiveService, make_key
from ._stream_sources import PERSON, free_port, http_ts_server, make_stream_video, need, wait_port
from .conftest import portrait


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_stream_video(tmp_path_factory.mktemp("stream-http") / "person.mp4")


def _home(home: Path) -> None:
    engine = facelens.Engine(threads=1, home=home)
    engine.create_collection("people")
    for person in [PERSON, "B000444"]:
        engine.index_faces("people", portrait(person, "b"), external_image_id=person, person_id=person)
    engine.close()


def sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of a text/event-stream response, as they come."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield {"id": fields.get("id"), "event": fields.get("event"), "data": json.loads(fields["data"])}
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def test_a_stream_in_the_service_start_events_status_stop(video: Path, tmp_path: Path) -> None:
    need("ffmpeg")
    _home(tmp_path)
    admin = make_key(tmp_path, name="admin", admin=True)
    searcher = make_key(tmp_path, name="door", grants={"people": ["search"]})
    reader = make_key(tmp_path, name="reader", grants={"people": ["read"]})
    port = free_port()
    server = http_ts_server(video, port, tmp_path / "ffmpeg.log")
    live = LiveService(ServerSettings(home=tmp_path, workers=2, engine_threads=1, rate_limit=0))
    url = f"http://127.0.0.1:{port}/live.ts"
    try:
        wait_port(port)
        with httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {searcher}"}) as c:
            r = c.post("/v1/collections/people/streams", json={"source": url, "name": "door-1", "purpose": "entrance"})
            assert r.status_code == 201, r.text
            assert r.json()["state"] == "running" and r.json()["name"] == "door-1"
            # read the events as Server-Sent Events until the person is identified
            kinds = []
            with c.stream("GET", "/v1/collections/people/streams/door-1/events",
                          headers={"Accept": "text/event-stream"}, timeout=90) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                for ev in sse(resp):
                    kinds.append(ev["event"])
                    assert ev["id"] == str(ev["data"]["seq"])
                    if ev["event"] == "track_identified":
                        hit = ev["data"]
                        break
            assert kinds[0] == "track_started"
            assert hit["matches"][0]["person_id"] == PERSON and hit["latency_ms"] > 0
            # the JSON poll from the same place on, and after the last one
            polled = c.get("/v1/collections/people/streams/door-1/events", params={"after": 0}).json()
            assert [e["kind"] for e in polled["events"]][: len(kinds)] == kinds
            later = c.get("/v1/collections/people/streams/door-1/events",
                          params={"after": polled["next"], "wait_s": 0.2}).json()
            assert all(e["seq"] > polled["next"] for e in later["events"])
            status = c.get("/v1/collections/people/streams/door-1").json()
            assert status["frames_decoded"] > 0 and status["tracks_total"] >= 1
            assert [s["name"] for s in c.get("/v1/collections/people/streams").json()["streams"]] == ["door-1"]
            # the same name again while it runs: 409
            again = c.post("/v1/collections/people/streams", json={"source": url, "name": "door-1", "purpose": "x"})
            assert again.status_code == 409 and again.json()["error"]["code"] == "stream_exists"
            # without the search scope: refused; another key does not see it
            with httpx.Client(base_url=live.url, timeout=30, headers={"Authorization": f"Bearer {reader}"}) as rc:
                r = rc.post("/v1/collections/people/streams", json={"source": url, "purpose": "x"})
                assert r.status_code == 403
                assert rc.get("/v1/collections/people/streams/door-1").status_code == 403
            with httpx.Client(base_url=live.url, timeout=30, headers={"Authorization": f"Bearer {admin}"}) as ac:
                assert ac.get("/v1/collections/people/streams/door-1").json()["name"] == "door-1"  # admin sees it
            stopped = c.delete("/v1/collections/people/streams/door-1").json()
            assert stopped["state"] == "stopped"
            done = c.get("/v1/collections/people/streams/door-1/events", params={"after": 0}).json()
            assert done["events"][-1]["kind"] == "stream_ended" and done["state"] == "stopped"
            assert c.get("/v1/collections/people/streams/nope").status_code == 404
    finally:
        live.stop()
        server.stop()
    engine = facelens.Engine(threads=1, home=tmp_path)
    bodies = [e.body for e in engine.log.entries(limit=100_000)]
    started = next(b for b in bodies if b["action"] == "watch_stream")
    assert started["actor"]["name"] == "door" and started["purpose"] == "entrance"
    assert any(b["action"] == "search_stream" and b["probe"]["stream"] == "door-1" for b in bodies)
    assert any(b["action"] == "stream_ended" and b["stream"] == "door-1" for b in bodies)
    engine.close()


def test_bad_sources_limits_and_shutdown(video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need("ffmpeg")
    _home(tmp_path)
    token = make_key(tmp_path, name="door", grants={"people": ["search"]})
    monkeypatch.setattr(video_routes, "MAX_STREAMS", 1)
    port = free_port()
    server = http_ts_server(video, port, tmp_path / "ffmpeg.log")
    live = LiveService(ServerSettings(home=tmp_path, workers=2, engine_threads=1, rate_limit=0))
    try:
        wait_port(port)
        with httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
            dead = f"rtsp://127.0.0.1:{free_port()}/nothing"
            r = c.post("/v1/collections/people/streams", json={"source": dead, "purpose": "x"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_video"
            assert "the source cannot be opened" in r.json()["error"]["message"]
            r = c.post("/v1/collections/people/streams", json={"source": "/etc/passwd", "purpose": "x"})
            assert r.status_code == 422 and "files of the server" in r.json()["error"]["message"]
            r = c.post("/v1/collections/people/streams", json={"source": "http://x", "purpose": "x", "every": 0})
            assert r.status_code == 422
            r = c.post("/v1/collections/people/streams", json={"source": dead})
            assert r.status_code == 422 and r.json()["error"]["code"] == "purpose_required"
            r = c.post("/v1/collections/people/streams", json={"source": dead, "purpose": "x", "mode": "investigate",
                                                               "max_fpir": 0.01})
            assert r.status_code == 422  # identify options in investigate mode
            ok = c.post("/v1/collections/people/streams",
                        json={"source": f"http://127.0.0.1:{port}/live.ts", "name": "one", "purpose": "x"})
            assert ok.status_code == 201, ok.text
            more = c.post("/v1/collections/people/streams", json={"source": dead, "name": "two", "purpose": "x"})
            assert more.status_code == 409 and more.json()["error"]["code"] == "too_many_streams"
            assert c.get("/v1/collections/nothere/streams").status_code == 404
        vs = live.app.state.video
        processor = vs.streams["one"].processor
        t0 = time.monotonic()
    finally:
        live.stop()  # the lifespan's end stops the streams
        server.stop()
    assert processor.done and processor.status().state == "stopped"
    assert time.monotonic() - t0 < 30
    engine = facelens.Engine(threads=1, home=tmp_path)
    ends = [e.body for e in engine.log.entries(limit=100_000) if e.body["action"] == "stream_ended"]
    assert [b["stream"] for b in ends] == ["one"]
    engine.close()


def test_streams_are_started_again_after_a_restart_until_stopped(video: Path, tmp_path: Path) -> None:
    need("ffmpeg")
    _home(tmp_path)
    token = make_key(tmp_path, name="door", grants={"people": ["search"]})
    port = free_port()
    server = http_ts_server(video, port, tmp_path / "ffmpeg.log")
    settings = ServerSettings(home=tmp_path, workers=2, engine_threads=1, rate_limit=0)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        wait_port(port)
        live = LiveService(settings)
        try:
            with httpx.Client(base_url=live.url, timeout=60, headers=headers) as c:
                r = c.post("/v1/collections/people/streams", json={"source": f"http://127.0.0.1:{port}/live.ts",
                                                                   "name": "kept", "purpose": "entrance", "every": 3})
                assert r.status_code == 201, r.text
        finally:
            live.stop()  # ffmpeg -listen 1 serves one client: it ends with the stream; serve it again
        saved = tmp_path / "service" / "streams.json"
        assert saved.stat().st_mode & 0o077 == 0 and "kept" in json.loads(saved.read_text())
        server.stop()
        server = http_ts_server(video, port, tmp_path / "ffmpeg2.log")
        wait_port(port)
        live = LiveService(settings)
        try:
            with httpx.Client(base_url=live.url, timeout=60, headers=headers) as c:
                deadline = time.monotonic() + 30
                while (r := c.get("/v1/collections/people/streams/kept")).status_code == 404:
                    assert time.monotonic() < deadline, "the stream was not started again"
                    time.sleep(0.2)
                assert r.json()["state"] == "running"
                assert c.delete("/v1/collections/people/streams/kept").json()["state"] == "stopped"
        finally:
            live.stop()
        assert json.loads(saved.read_text()) == {}
    finally:
        server.stop()
