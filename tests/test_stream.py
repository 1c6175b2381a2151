"""Live streams (Engine.watch_stream): real sources on 127.0.0.1 (rtsp-server-perl with ffmpeg publishing,
``ffmpeg -listen 1`` serving MPEG-TS over HTTP) showing a person of the collection; frames dropped, not
queued, when analysis is slower than the source; a source killed mid-stream and brought back; sources that
never answer or are not video. A local file as the source needs neither program."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

import facelens
from facelens.accountability import Actor
from facelens.errors import InvalidArgumentError, VideoDecodeError
from facelens.video import StreamEvent, StreamOptions, StreamProcessor

from ._stream_sources import (
    ENTERS_S,
    LEAVES_S,
    PERSON,
    RtspSource,
    free_port,
    http_ts_server,
    make_stream_video,
    need,
    wait_port,
)
from .conftest import portrait


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_stream_video(tmp_path_factory.mktemp("stream") / "person.mp4")


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> facelens.Engine:
    """A home whose collection "people" holds the _b photos of A000368 (on the stream) and two others."""
    engine = facelens.Engine(threads=2, home=tmp_path_factory.mktemp("home"))
    engine.create_collection("people")
    for person in [PERSON, "B000444", "C000380"]:
        engine.index_faces("people", portrait(person, "b"), external_image_id=person, person_id=person)
    return engine


def wait_for(processor: StreamProcessor, kind: str, timeout_s: float = 60.0, after: int = 0) -> StreamEvent:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for e in processor.events(after, wait_s=0.5):
            if e.kind == kind:
                return e
            after = e.seq
    raise AssertionError(f"no {kind} event in {timeout_s} s; status {processor.status()}")


def log_actions(engine: facelens.Engine, stream: str) -> list[dict[str, object]]:
    return [e.body for e in engine.log.entries(limit=100_000) if e.body.get("stream") == stream
            or (isinstance(e.body.get("probe"), dict) and e.body["probe"].get("stream") == stream)]


def test_rtsp_stream_reports_the_person_in_the_collection_with_a_latency(video: Path, people: facelens.Engine,
                                                                         tmp_path: Path) -> None:
    need("ffmpeg", "rtsp-server-perl")
    source = RtspSource(video, tmp_path)
    try:
        seen: list[StreamEvent] = []
        p = people.watch_stream("people", source.url, name="door-rtsp", actor=Actor.cli(), purpose="test rtsp",
                                on_event=seen.append, events_path=tmp_path / "events.jsonl")
        try:
            started = wait_for(p, "track_started")
            hit = wait_for(p, "track_identified", after=started.seq - 1)
            assert hit.track_id == started.track_id
            assert hit.data["matches"][0]["person_id"] == PERSON
            assert hit.data["operating_point"]["max_fpir"] == pytest.approx(0.003 / 3)  # one of a track's 3 looks
            assert hit.latency_ms is not None and 0 < hit.latency_ms < 10_000
            assert hit.captured_at is not None and hit.stream_time_s is not None
            assert hit.data["log_entry"]["seq"] > 0
            status = p.status()
            assert status.state == "running" and status.frames_decoded > 0 and status.fps_in > 0
            assert status.match_latency_ms["p50"] is not None
        finally:
            final = p.stop()
        assert final.state == "stopped" and final.tracks_open == 0
        assert [e.kind for e in seen][-1] == "stream_ended"
        lines = (tmp_path / "events.jsonl").read_text().splitlines()
        assert len(lines) == len(seen)
        actions = [b["action"] for b in log_actions(people, "door-rtsp")]
        assert actions[0] == "watch_stream" and actions[-1] == "stream_ended" and "search_stream" in actions
        record = next(b for b in log_actions(people, "door-rtsp") if b["action"] == "search_stream"
                      and b["results"][0]["candidates"])  # type: ignore[index]
        assert record["purpose"] == "test rtsp" and record["actor"]["kind"] == "cli"  # type: ignore[index]
    finally:
        source.stop()


def test_a_file_source_ends_with_its_tracks_identified(video: Path, people: facelens.Engine) -> None:
    """Without any program: a file read as a stream (as fast as it decodes, so most frames are dropped)."""
    p = people.watch_stream("people", video, name="file-1", options=StreamOptions(every=1, max_events=50))
    assert p.wait(120)
    status = p.status()
    assert status.state == "ended" and status.error is None
    kinds = [e.kind for e in p.events()]
    assert kinds[-1] == "stream_ended" and "track_identified" in kinds and "track_ended" in kinds
    ended = next(e for e in p.events() if e.kind == "track_ended")
    assert ended.data["persons"] == [PERSON]
    assert ENTERS_S - 0.5 <= ended.data["start_s"] <= ENTERS_S + 1.0
    assert LEAVES_S - 1.0 <= ended.data["end_s"] <= LEAVES_S + 0.1
    assert status.frames_offered == status.frames_analysed + status.frames_dropped


def test_frames_are_dropped_not_queued_when_analysis_is_slower_than_the_source(video: Path,
                                                                              people: facelens.Engine,
                                                                              tmp_path: Path) -> None:
    """ffmpeg serves as fast as the reader takes it (hundreds of frames a second): the analysis takes the
    newest frame each time, the others are counted as dropped, and a frame's wait stays short."""
    need("ffmpeg")
    port = free_port()
    server = http_ts_server(video, port, tmp_path / "ffmpeg.log", realtime=False)
    try:
        wait_port(port)
        p = people.watch_stream("people", f"http://127.0.0.1:{port}/live.ts", name="fast",
                                options=StreamOptions(every=1))
        try:
            deadline = time.monotonic() + 60
            while p.status().frames_analysed < 10 and time.monotonic() < deadline:
                time.sleep(0.2)
            status = p.status()
        finally:
            final = p.stop()
        assert status.frames_analysed >= 10
        assert status.frames_dropped > status.frames_analysed, status  # most frames dropped, none queued
        assert final.frames_offered - final.frames_analysed - final.frames_dropped in (0, 1)
        assert status.fps_in > 2 * status.fps_out
        # a frame waits at most for the one being analysed: its latency is about one analysis, not a queue's
        assert status.frame_latency_ms["p95"] is not None and status.frame_latency_ms["p95"] < 5_000
    finally:
        server.stop()


def test_a_source_killed_mid_stream_is_reconnected(video: Path, people: facelens.Engine, tmp_path: Path) -> None:
    need("ffmpeg")
    port = free_port()
    server = http_ts_server(video, port, tmp_path / "ffmpeg.log")
    try:
        wait_port(port)
        p = people.watch_stream("people", f"http://127.0.0.1:{port}/live.ts", name="flaky",
                                options=StreamOptions(backoff_s=0.2, backoff_max_s=0.5, read_timeout_s=2))
        try:
            first = wait_for(p, "track_identified")
            server.kill()  # SIGKILL: the connection drops mid-stream
            lost = wait_for(p, "source_lost", after=first.seq)
            assert p.status().state == "reconnecting"
            server.stop()
            server = http_ts_server(video, port, tmp_path / "ffmpeg2.log")
            back = wait_for(p, "source_back", after=lost.seq)
            again = wait_for(p, "track_identified", after=back.seq)
            assert again.data["matches"][0]["person_id"] == PERSON
            assert p.status().reconnects == 1 and p.status().state == "running"
        finally:
            p.stop()
    finally:
        server.stop()


def test_a_source_gone_for_good_ends_the_stream_failed(video: Path, people: facelens.Engine, tmp_path: Path) -> None:
    need("ffmpeg")
    port = free_port()
    server = http_ts_server(video, port, tmp_path / "ffmpeg.log")
    try:
        wait_port(port)
        p = people.watch_stream("people", f"http://127.0.0.1:{port}/live.ts", name="gone", actor=Actor.cli(),
                                options=StreamOptions(reconnect_for_s=1.5, backoff_s=0.2, read_timeout_s=2))
        wait_for(p, "track_started")
        server.kill()
        assert p.wait(30)
    finally:
        server.stop()
    status = p.status()
    assert status.state == "failed" and status.error is not None and "did not come back within 1.5 s" in status.error
    last = p.events()[-1]
    assert last.kind == "stream_ended" and last.data["state"] == "failed"
    assert log_actions(people, "gone")[-1]["state"] == "failed"


def test_sources_that_never_answer_or_are_not_video_are_clear_errors(people: facelens.Engine,
                                                                     tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(VideoDecodeError, match=rf"rtsp://127.0.0.1:{port}/x: the source cannot be opened"):
        people.watch_stream("people", f"rtsp://127.0.0.1:{port}/x", actor=Actor.cli())
    assert time.monotonic() - t0 < 15
    # a server that accepts the connection and never answers: the open timeout ends the wait
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/live.ts"
        t0 = time.monotonic()
        with pytest.raises(VideoDecodeError, match="waited up to 1.5 s"):
            people.watch_stream("people", url, options=StreamOptions(open_timeout_s=1.5, read_timeout_s=1.5))
        assert time.monotonic() - t0 < 10
    finally:
        stop.set()
        thread.join()
        for c in held:
            c.close()
        silent.close()
    text = tmp_path / "notes.txt"
    text.write_text("not a video at all\n" * 100)
    with pytest.raises(VideoDecodeError, match="notes.txt: the source cannot be opened"):
        people.watch_stream("people", text)
    with pytest.raises(VideoDecodeError, match="no such file"):
        people.watch_stream("people", tmp_path / "missing.mp4")
    with pytest.raises(InvalidArgumentError, match="invalid stream name"):
        people.watch_stream("people", text, name="a b")
    with pytest.raises(InvalidArgumentError, match="every"):
        StreamOptions(every=0)
    failed = [b for b in people.log.entries(limit=100_000)
              if b.body.get("action") == "watch_stream" and "error" in b.body]
    assert failed and failed[0].body["error"]["code"] == "invalid_video"


def test_investigating_a_stream_opens_review_items_with_the_tracks_crop(video: Path, tmp_path: Path) -> None:
    engine = facelens.Engine(threads=2, home=tmp_path / "home")
    engine.create_collection("cases", policy={"review_required": True, "disclose_before_review": False})
    for person in [PERSON, "B000444"]:
        engine.index_faces("cases", portrait(person, "b"), external_image_id=person, person_id=person)
    p = engine.watch_stream("cases", video, name="inv", mode="investigate", actor=Actor.cli(),
                            purpose="case 2026-17", options=StreamOptions(every=1))
    assert p.wait(120)
    leads = [e for e in p.events() if e.kind == "track_candidates"]
    assert leads, [e.kind for e in p.events()]
    first = leads[0].data["candidates"][0]
    assert first.get("review_item_id")
    assert first.get("person_id") is None  # withheld until a reviewer confirms (the policy)
    items, _ = engine.review_list("cases")
    assert items and engine.review_probe_crop("cases", items[0].item_id)[:2] == b"\xff\xd8"  # a JPEG crop
    engine.close()


def test_events_kept_are_bounded(video: Path, people: facelens.Engine) -> None:
    p = people.watch_stream("people", video, name="bounded", options=StreamOptions(every=1, max_events=2))
    assert p.wait(120)
    kept = p.events()
    assert len(kept) == 2 and kept[-1].kind == "stream_ended" and kept[-1].seq > 2


def test_someone_taking_the_place_of_someone_who_left_gets_a_track_of_their_own(people: facelens.Engine,
                                                                                tmp_path: Path) -> None:
    """A000368 leaves and B000444 steps in at the same place 0.4 s later (within the tracker's max_gap_s):
    B000444 is not reported under A000368's track, but identified on a track of their own."""
    video = make_stream_video(tmp_path / "swap.mp4", duration_s=5.0,
                              appearances=[(PERSON, 0.4, 1.8), ("B000444", 2.2, 4.8)])
    p = people.watch_stream("people", video, name="swap", options=StreamOptions(every=1))
    assert p.wait(120)
    hits = [e for e in p.events() if e.kind == "track_identified"]
    assert [e.data["matches"][0]["person_id"] for e in hits] == [PERSON, "B000444"], [e.to_dict() for e in hits]
    assert hits[0].track_id != hits[1].track_id
    ended = [e for e in p.events() if e.kind == "track_ended"]
    assert [e.data["persons"] for e in ended] == [[PERSON], ["B000444"]]
    assert ended[0].data["end_s"] <= 2.2 + 1.1  # where it was last seen (up to a recheck late, when frames drop)


def test_stored_video_also_splits_a_track_when_someone_takes_the_place(people: facelens.Engine,
                                                                       tmp_path: Path) -> None:
    video = make_stream_video(tmp_path / "swap.mp4", duration_s=5.0,
                              appearances=[(PERSON, 0.4, 1.8), ("B000444", 2.2, 4.8)])
    result = people.search_video("people", video)
    found = [(round(t.start_s, 2), round(t.end_s, 2), t.search.matches[0].person_id if t.search and
              t.search.matches else None) for t in result.tracks]
    assert [f[2] for f in found] == [PERSON, "B000444"], found
    assert abs(found[0][1] - 1.8) <= 0.05 and abs(found[1][0] - 2.2) <= 5 / 25 + 1e-6  # a split starts to `every`


def test_a_sources_password_is_never_shown_nor_logged(people: facelens.Engine) -> None:
    url = f"rtsp://admin:s3cret-pw@127.0.0.1:{free_port()}/cam"
    with pytest.raises(VideoDecodeError) as info:
        people.watch_stream("people", url, name="pw", actor=Actor.cli(), purpose="x")
    assert "s3cret-pw" not in str(info.value) and "admin:***@127.0.0.1" in str(info.value)
    text = json.dumps([e.body for e in people.log.entries(limit=100_000)])
    assert "s3cret-pw" not in text and "admin:***@127.0.0.1" in text
