"""``facelens stream``: a stream run in the foreground (JSON lines), and the commands that talk to
``facelens serve`` over real HTTP; each run as a user runs it, ``python -m facelens`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import facelens
from facelens.server import ServerSettings

from ._service import LiveService, make_key
from ._stream_sources import PERSON, free_port, http_ts_server, make_stream_video, need, wait_port
from .conftest import portrait

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "FACELENS_ACTOR": "tester", **(env or {})}
    return subprocess.run([sys.executable, "-m", "facelens", *args], capture_output=True, text=True,
                          timeout=timeout, env=full)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    home = tmp_path_factory.mktemp("home")
    engine = facelens.Engine(threads=1, home=home)
    engine.create_collection("people")
    for person in [PERSON, "B000444"]:
        engine.index_faces("people", portrait(person, "b"), external_image_id=person, person_id=person)
    engine.close()
    return home, make_stream_video(tmp_path_factory.mktemp("video") / "person.mp4")


def test_stream_start_in_the_foreground_prints_json_lines(setup: tuple[Path, Path], tmp_path: Path) -> None:
    home, video = setup
    events_file = tmp_path / "events.jsonl"
    proc = run("stream", "start", "door", "--collection", "people", "--source", str(video), "--home", str(home),
               "--purpose", "cli test", "--events-file", str(events_file), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "track_started" and kinds[-1] == "stream_ended" and "track_identified" in kinds
    hit = next(e for e in events if e["kind"] == "track_identified")
    assert hit["matches"][0]["person_id"] == PERSON and hit["stream"] == "door"
    assert [json.loads(line) for line in events_file.read_text().splitlines()] == events
    bad = run("stream", "start", "door", "--collection", "people", "--source", f"rtsp://127.0.0.1:{free_port()}/x",
              "--home", str(home))
    assert bad.returncode == 3 and "the source cannot be opened" in bad.stderr and "Traceback" not in bad.stderr
    nope = run("stream", "list", "--collection", "people")
    assert nope.returncode == 2 and "--server" in nope.stderr


def test_stream_commands_talk_to_the_service(setup: tuple[Path, Path], tmp_path: Path) -> None:
    need("ffmpeg")
    home, video = setup
    token = make_key(home, name="cli", grants={"people": ["search"]})
    port = free_port()
    server = http_ts_server(video, port, tmp_path / "ffmpeg.log")
    live = LiveService(ServerSettings(home=home, workers=2, engine_threads=1, rate_limit=0))
    env = {"FACELENS_SERVER": live.url, "FACELENS_API_KEY": token}
    try:
        wait_port(port)
        started = run("stream", "start", "gate", "--collection", "people", "--source",
                      f"http://127.0.0.1:{port}/live.ts", "--purpose", "cli", env=env)
        assert started.returncode == 0, started.stderr
        assert json.loads(started.stdout)["state"] == "running"
        listed = run("stream", "list", "--collection", "people", env=env)
        assert [s["name"] for s in json.loads(listed.stdout)["streams"]] == ["gate"]
        status = run("stream", "status", "gate", "--collection", "people", env=env)
        assert json.loads(status.stdout)["name"] == "gate"
        stopped = run("stream", "stop", "gate", "--collection", "people", env=env)
        assert json.loads(stopped.stdout)["state"] == "stopped"
        events = run("stream", "events", "gate", "--collection", "people", env=env)  # follows until the end
        kinds = [json.loads(line)["kind"] for line in events.stdout.splitlines()]
        assert kinds[-1] == "stream_ended"
        missing = run("stream", "status", "nope", "--collection", "people", env=env)
        assert missing.returncode == 3 and "stream_not_found" in missing.stderr
        refused = run("stream", "list", "--collection", "people", env={**env, "FACELENS_API_KEY": "wrong"})
        assert refused.returncode == 5
    finally:
        live.stop()
        server.stop()
