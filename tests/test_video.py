"""Video: tracks, their times and searches, on short H.264 videos made here from the bundled portraits.

Each video is encoded with PyAV from known frames: who is on screen, where, and at which presentation
times (the frame interval changes half-way, a variable frame rate), so that every track's start and end can
be checked against the truth to within one frame interval.
"""

from __future__ import annotations

import fractions
import math
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

import facelens
from facelens.errors import CollectionNotFoundError, InvalidArgumentError, VideoDecodeError
from facelens.pipeline import CancelledError, CancelToken, cancellable
from facelens.video import VideoOptions, VideoProgress, open_video, write_annotated_video

from .conftest import portrait

SIZE = (480, 288)
#: (person, first s, last s, x at first, x at last, y): A and B on screen together from 1.6 to 3.0 s, D (a
#: stranger to the collection) alone from 3.4 s, nobody before 0.8 s nor after 4.4 s.
SCENE = [("A000368", 0.8, 3.0, 10, 60, 40), ("B000444", 1.6, 4.0, 330, 320, 60), ("D000601", 3.4, 4.4, 190, 190, 50)]
DURATION = 4.8


def _interval(t: float) -> float:
    return 0.04 if t < 2.4 else 0.06  # 25 fps, then about 16.7 fps: a variable frame rate


def _sprite(person: str, width: int = 140) -> npt.NDArray[np.uint8]:
    im = Image.open(portrait(person)).convert("RGB")
    return np.asarray(im.resize((width, int(round(width * im.height / im.width))), Image.Resampling.BILINEAR))


def make_video(path: Path, scene: list[tuple[str, float, float, int, int, int]], *, duration: float = DURATION,
               interval: object = _interval, faststart: bool = False, cut_s: float | None = None) -> list[float]:
    """Encode ``scene`` as H.264 in an mp4; returns the presentation times (s) of its frames. From ``cut_s``
    on, the background is another one (a cut to another shot)."""
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([60 + 80 * xx / w, 90 + 40 * yy / h, np.full_like(xx, 120.0)], -1).astype(np.uint8)
    other = np.stack([np.full_like(xx, 200.0), 180 - 60 * xx / w, 40 + 60 * yy / h], -1).astype(np.uint8)
    sprites = {p: _sprite(p) for p, *_ in scene}
    times: list[float] = []
    t = 0.0
    while t < duration - 1e-9:
        times.append(round(t, 3))
        t += interval(t) if callable(interval) else float(interval)  # type: ignore[arg-type]
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        stream.options = {"g": "25", "preset": "ultrafast"}
        for t in times:
            img = (other if cut_s is not None and t >= cut_s - 1e-6 else background).copy()
            for person, t0, t1, x0, x1, y in scene:
                if t0 - 1e-6 <= t <= t1 + 1e-6:
                    sp = sprites[person]
                    x = int(round(x0 + (x1 - x0) * (t - t0) / max(t1 - t0, 1e-6)))
                    img[y : y + sp.shape[0], x : x + sp.shape[1]] = sp[: h - y, : w - x]
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return times


def truth(times: list[float], t0: float, t1: float) -> tuple[float, float]:
    """The first and last frame times showing an appearance from t0 to t1."""
    shown = [t for t in times if t0 - 1e-6 <= t <= t1 + 1e-6]
    return shown[0], shown[-1]


def frame_interval(times: list[float], t: float) -> float:
    i = min(range(len(times)), key=lambda j: abs(times[j] - t))
    return max(times[min(i + 1, len(times) - 1)] - times[i], times[i] - times[max(i - 1, 0)])


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    path = tmp_path_factory.mktemp("video") / "scene.mp4"
    return path, make_video(path, SCENE)


@pytest.fixture(scope="module")
def home_engine(tmp_path_factory: pytest.TempPathFactory) -> facelens.Engine:
    """An engine with a collection "people": the _b photos of A000368, B000444 and three others, not D000601."""
    engine = facelens.Engine(threads=2, home=tmp_path_factory.mktemp("home"))
    engine.create_collection("people")
    for person in ["A000368", "B000444", "B001266", "C000380", "C001079"]:
        engine.index_faces("people", portrait(person, "b"), external_image_id=person, person_id=person)
    return engine


def check_tracks(result: facelens.video.VideoResult, times: list[float]) -> None:
    assert len(result.tracks) == len(SCENE), [(t.start_s, t.end_s) for t in result.tracks]
    for track, (person, t0, t1, *_rest) in zip(result.tracks, SCENE, strict=True):
        first, last = truth(times, t0, t1)
        assert abs(track.start_s - first) <= frame_interval(times, first) + 1e-6, (person, track.start_s, first)
        assert abs(track.end_s - last) <= frame_interval(times, last) + 1e-6, (person, track.end_s, last)
        assert track.boxes and all(track.start_s - 1e-6 <= b.time_s <= track.end_s + 1e-6 for b in track.boxes)
        h, w = track.best_crop.shape[:2]
        assert track.best_crop.shape[2] == 3 and h >= track.best_face.bbox.height and w >= track.best_face.bbox.width
        assert track.start_s <= track.best_time_s <= track.end_s


@pytest.mark.parametrize("every", [1, 5])
def test_detect_video_tracks_people_entering_and_leaving(engine: facelens.Engine,
                                                         scene_video: tuple[Path, list[float]], every: int) -> None:
    path, times = scene_video
    result = engine.detect_video(path, every=every)
    check_tracks(result, times)
    s = result.stats
    assert s.frames_decoded == len(times) and s.frames_examined == math.ceil(len(times) / every)
    assert s.frames_still > 0  # the empty start and end, and the still stretches, are not detected
    assert s.frames_detected + s.frames_still == s.frames_examined
    assert s.faces_embedded == 0 and all(t.embeddings is None for t in result.tracks)
    assert result.info.width == SIZE[0] and result.info.height == SIZE[1] and result.info.codec == "h264"
    assert abs(s.video_s - DURATION) < 0.1
    d = result.to_dict()
    assert [t["track_id"] for t in d["tracks"]] == [1, 2, 3] and d["collection"] is None


@pytest.fixture(scope="module")
def identified(home_engine: facelens.Engine, scene_video: tuple[Path, list[float]]) -> facelens.video.VideoResult:
    return home_engine.search_video("people", scene_video[0])


def test_search_video_names_who_appears_when(home_engine: facelens.Engine, scene_video: tuple[Path, list[float]],
                                             identified: facelens.video.VideoResult) -> None:
    _, times = scene_video
    result = identified
    check_tracks(result, times)
    names = []
    for track in result.tracks:
        assert track.search is not None and track.embeddings is not None
        n = len(track.embeddings)
        assert 1 <= n <= 3 and len(track.embedding_times) == n
        # n looks at the collection: each made at max_fpir / n, so the track's max_fpir holds
        assert track.search.operating_point.max_fpir == pytest.approx(home_engine.config.max_fpir / n)
        names.append([m.person_id for m in track.search.matches])
    assert names == [["A000368"], ["B000444"], []]  # D000601 is not in the collection: no one
    assert result.stats.faces_embedded <= 4 * 3 * len(result.tracks)
    assert result.stats.faces_embedded < result.stats.faces_detected
    d = result.to_dict()
    assert d["tracks"][0]["search"]["matches"][0]["external_image_id"] == "A000368"
    frames = result.per_frame()  # Rekognition's GetFaceSearch form
    assert len(frames) == sum(len(t.boxes) for t in result.tracks)
    assert [f["timestamp_ms"] for f in frames] == sorted(f["timestamp_ms"] for f in frames)
    at_2s = [f for f in frames if 1600 <= f["timestamp_ms"] <= 3000]
    assert {f["person"]["index"] for f in at_2s} == {1, 2}  # two people on screen together
    assert all(f["face_matches"][0]["person_id"] == "B000444" for f in at_2s if f["person"]["index"] == 2)
    assert {"face_id", "person_id", "score", "fmr"} <= set(d["tracks"][1]["search"]["matches"][0])


def test_search_video_investigate_lists_leads(home_engine: facelens.Engine,
                                              scene_video: tuple[Path, list[float]]) -> None:
    path, _ = scene_video
    # by default a lead's identity is withheld until a reviewer confirms it (the collection's policy)
    withheld = home_engine.search_video("people", path, mode="investigate", every=10).tracks[0].search
    assert withheld is not None and withheld.candidates[0].person_id is None
    assert withheld.candidates[0].review_item_id is not None
    home_engine.set_collection_policy("people", {"disclose_before_review": True})
    try:
        result = home_engine.search_video("people", path, mode="investigate", every=10)
    finally:
        home_engine.set_collection_policy("people", {"disclose_before_review": False})
    first = result.tracks[0].search
    assert first is not None and first.mode is facelens.SearchMode.INVESTIGATE and not first.matches
    assert first.candidates[0].person_id == "A000368"
    n = len(result.tracks[0].embeddings)  # type: ignore[arg-type]
    c = first.candidates[0]
    assert c.expected_strangers == pytest.approx(n * first.collection_size * c.fmr, rel=1e-3)


def test_search_video_checks_its_options_before_the_video(home_engine: facelens.Engine, tmp_path: Path) -> None:
    missing = tmp_path / "nothing.mp4"
    with pytest.raises(CollectionNotFoundError):
        home_engine.search_video("no-such-collection", missing)
    with pytest.raises(InvalidArgumentError, match="identify mode"):
        home_engine.search_video("people", missing, mode="investigate", max_fpir=0.01)
    with pytest.raises(InvalidArgumentError, match="every"):
        home_engine.detect_video(missing, every=0)
    with pytest.raises(VideoDecodeError, match="no such file") as e:
        home_engine.search_video("people", missing)
    assert str(missing) in str(e.value)


def test_search_by_embedding_is_the_image_search(home_engine: facelens.Engine) -> None:
    image = portrait("B000444", "a")
    by_image = home_engine.search_faces_by_image("people", image)[0]
    face = by_image.face
    assert face is not None and face.embedding is not None
    one = home_engine.search_faces_by_embedding("people", face.embedding)
    assert [(m.face_id, m.score) for m in one.matches] == [(m.face_id, m.score) for m in by_image.matches]
    assert one.operating_point == by_image.operating_point
    two = home_engine.search_faces_by_embedding("people", np.stack([face.embedding, face.embedding]), max_fpir=0.01)
    assert two.operating_point.max_fpir == pytest.approx(0.005)
    assert [m.face_id for m in two.matches] == [m.face_id for m in one.matches]
    with pytest.raises(InvalidArgumentError, match="embeddings"):
        home_engine.search_faces_by_embedding("people", np.ones(7, dtype=np.float32))


def test_embed_faces_is_analyze_in_two_steps(engine: facelens.Engine) -> None:
    image = portrait("C001085", "a")
    analysed = engine.analyze(image)
    embedded = engine.embed_faces(image, list(engine.detect(image)))
    assert len(embedded) == len(analysed) == 1
    assert float(np.dot(embedded[0].embedding, analysed[0].embedding)) > 0.9999  # type: ignore[arg-type]


def test_progress_and_cancellation(engine: facelens.Engine, scene_video: tuple[Path, list[float]]) -> None:
    path, _ = scene_video
    seen: list[VideoProgress] = []
    engine.detect_video(path, progress=seen.append)
    assert len(seen) >= 4 and [p.time_s for p in seen] == sorted(p.time_s for p in seen)
    assert seen[-1].tracks >= 3 and seen[0].duration_s == pytest.approx(DURATION, abs=0.1)
    token = CancelToken()

    def stop_at_two_seconds(p: VideoProgress) -> None:
        if p.time_s >= 2.0:
            token.cancel()

    with cancellable(token), pytest.raises(CancelledError):
        engine.detect_video(path, progress=stop_at_two_seconds)


def test_a_still_person_is_held_not_detected(engine: facelens.Engine, tmp_path: Path) -> None:
    path = tmp_path / "still.mp4"
    times = make_video(path, [("C001082", 0.5, 3.5, 150, 150, 60)], duration=4.0, interval=0.04)
    result = engine.detect_video(path, every=2, options=VideoOptions(max_still_s=1.0))
    assert len(result.tracks) == 1
    first, last = truth(times, 0.5, 3.5)
    assert abs(result.tracks[0].start_s - first) <= 0.04 + 1e-6 and abs(result.tracks[0].end_s - last) <= 0.04 + 1e-6
    s = result.stats
    assert s.frames_still > s.frames_detected  # refreshed once per max_still_s, not on every examined frame


def test_not_a_video(engine: facelens.Engine, tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"these are not the frames you are looking for\n" * 100)
    for bad, words in [(junk, "not a video"), (portrait("A000368"), "still image"), (tmp_path, "not a regular file")]:
        with pytest.raises(VideoDecodeError, match=words) as e:
            engine.detect_video(bad)
        assert str(bad) in str(e.value)
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty"):
        engine.detect_video(empty)


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_video(engine: facelens.Engine, tmp_path: Path, faststart: bool) -> None:
    path = tmp_path / "whole.mp4"
    make_video(path, SCENE[:1], duration=2.0, interval=0.04, faststart=faststart)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoDecodeError) as e:
        engine.detect_video(cut)
    assert str(cut) in str(e.value)
    if faststart:  # the index comes first: frames decode up to the cut, which is named
        assert e.value.at_s is not None and 0 < e.value.at_s < 2.0
    with open_video(path, max_pixels=10**8) as reader:  # the whole file is fine
        assert len(list(reader.frames())) == 50


def test_corrupt_video(engine: facelens.Engine, tmp_path: Path) -> None:
    path = tmp_path / "whole.mp4"
    make_video(path, SCENE[:1], duration=2.0, interval=0.04, faststart=True)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 3
    data[start : start + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(VideoDecodeError, match="damaged") as e:
        engine.detect_video(bad)
    assert str(bad) in str(e.value)


def test_frames_over_max_pixels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    make_video(path, [], duration=0.2, interval=0.04)
    with pytest.raises(VideoDecodeError, match="max_pixels"):
        open_video(path, max_pixels=1000)


def test_a_cut_ends_every_track(home_engine: facelens.Engine, tmp_path: Path) -> None:
    """Two people filmed at the same place in two shots are two tracks, split at the cut, each named."""
    path = tmp_path / "cut.mp4"
    scene = [("A000368", 0.0, 1.48, 170, 170, 50), ("B000444", 1.52, 3.0, 170, 170, 50)]
    times = make_video(path, scene, duration=3.0, interval=0.04, cut_s=1.52)
    result = home_engine.search_video("people", path)
    assert result.stats.cuts == 1
    assert [(t.start_s, t.end_s) for t in result.tracks] == [truth(times, 0.0, 1.48), truth(times, 1.52, 3.0)]
    assert [[m.person_id for m in t.search.matches] for t in result.tracks if t.search] == [["A000368"], ["B000444"]]


def test_annotated_copy_shows_boxes_and_names(identified: facelens.video.VideoResult,
                                             scene_video: tuple[Path, list[float]], tmp_path: Path) -> None:
    path, times = scene_video
    out = tmp_path / "annotated.mp4"
    assert write_annotated_video(identified, path, out) == len(times)
    a = identified.tracks[0]  # A000368, matched: drawn green
    box = a.boxes[len(a.boxes) // 2]
    with open_video(out, max_pixels=10**8) as reader:
        frames = {round(f.time_s, 3): f for f in reader.frames()}
        assert sorted(frames) == pytest.approx(times, abs=1e-3)
        rgb = frames[min(frames, key=lambda t: abs(t - box.time_s))].rgb().astype(int)
        before = frames[min(frames)].rgb().astype(int)  # nobody on screen yet: nothing drawn
    x0, y0, _, y1 = (int(round(v)) for v in box.bbox.as_list())
    edge = rgb[(y0 + y1) // 2, x0]
    assert edge[1] > edge[0] + 60 and edge[1] > edge[2] + 60, edge
    plain = before[(y0 + y1) // 2, x0]
    assert not plain[1] > plain[0] + 60, plain


def test_a_video_search_by_an_actor_is_logged(home_engine: facelens.Engine,
                                              scene_video: tuple[Path, list[float]], tmp_path: Path) -> None:
    path, _ = scene_video
    actor = facelens.Actor.python("video-test")
    result = home_engine.search_video("people", path, actor=actor, purpose="test: who was in the lobby",
                                      options=VideoOptions(every=10))
    entry = home_engine.log.entries(after_seq=max(home_engine.log.head()[0] - 1, 0))[-1]  # type: ignore[index]
    body = entry.body
    assert body["action"] == "search_video" and body["purpose"] == "test: who was in the lobby"
    assert body["actor"] == {"kind": "python", "id": "video-test", "name": None} and body["collection"] == "people"
    assert len(body["tracks"]) == len(body["results"]) == len(result.tracks)
    named = [[c["person_id"] for c in r["candidates"]] for r in body["results"]]
    assert named == [[m.person_id for m in t.search.matches] for t in result.tracks if t.search]
    assert str(path) not in str(body) and "A000368_b" not in str(body)  # no file name, no external image id
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"nothing here" * 100)
    with pytest.raises(VideoDecodeError):
        home_engine.search_video("people", junk, actor=actor, purpose="a failed search is logged too")
    failed = home_engine.log.entries(after_seq=home_engine.log.head()[0] - 1)[-1].body  # type: ignore[index]
    assert failed["error"]["code"] == "invalid_video" and str(junk) not in failed["error"]["message"]
    assert failed["purpose"] == "a failed search is logged too" and failed["results"] == []
