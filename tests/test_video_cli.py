"""``facelens video detect|search`` as a user runs them: a real process, a video made from the portraits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import facelens

from .conftest import portrait
from .test_video import SCENE, make_video, truth

ROOT = Path(__file__).resolve().parents[1]


def facelens_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACELENS_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "facelens", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    path = tmp_path_factory.mktemp("cli") / "scene.mp4"
    return path, make_video(path, SCENE)


def test_video_search_prints_who_and_when(clip: tuple[Path, list[float]], tmp_path: Path) -> None:
    path, times = clip
    engine = facelens.Engine(threads=2, home=tmp_path)
    engine.create_collection("people")
    for person in ["A000368", "B000444", "C000380"]:
        engine.index_faces("people", portrait(person, "b"), external_image_id=person, person_id=person)
    engine.close()
    annotated = tmp_path / "annotated.mp4"
    r = facelens_cli("video", "search", "people", str(path), "--json", "--home", str(tmp_path),
                     "--annotate", str(annotated), "--purpose", "cli test", "--every", "10")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["collection"] == "people" and doc["mode"] == "identify" and doc["annotated"] == str(annotated)
    tracks = doc["tracks"]
    assert [[m["person_id"] for m in t["search"]["matches"]] for t in tracks] == [["A000368"], ["B000444"], []]
    first, last = truth(times, SCENE[0][1], SCENE[0][2])
    assert abs(tracks[0]["start_s"] - first) <= 0.04 + 1e-3 and abs(tracks[0]["end_s"] - last) <= 0.04 + 1e-3
    m = tracks[0]["search"]["matches"][0]
    assert {"face_id", "external_image_id", "person_id", "score", "fmr"} <= set(m)
    assert annotated.stat().st_size > 0
    engine = facelens.Engine(threads=2, home=tmp_path)
    last = engine.log.entries(after_seq=engine.log.head()[0] - 1)[-1].body  # type: ignore[index]
    assert last["action"] == "search_video" and last["purpose"] == "cli test" and last["actor"]["kind"] == "cli"
    engine.close()
    r = facelens_cli("video", "search", "people", str(path), "--every", "3", "--max-fpir", "0.01",
                     "--home", str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "max FPIR 0.01 per track" in lines[0]
    assert "A000368" in lines[1] and "B000444" in lines[2] and "nobody in the collection" in lines[3]


def test_video_detect_and_its_errors(clip: tuple[Path, list[float]], tmp_path: Path) -> None:
    path, _ = clip
    r = facelens_cli("video", "detect", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\ntrack ") == 3
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 50)
    r = facelens_cli("video", "detect", str(junk))
    assert r.returncode == 3 and str(junk) in r.stderr and "Traceback" not in r.stderr
    r = facelens_cli("video", "detect", str(path), "--every", "0")
    assert r.returncode == 2
    r = facelens_cli("video", "search", "nope", str(path), "--home", str(tmp_path))
    assert r.returncode == 3 and "nope" in r.stderr


def test_video_commands_import_nothing_heavy() -> None:
    """`facelens --help` stays fast: the video commands load PyAV, numpy and the engine only when run."""
    code = "import sys, facelens.cli.video; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout.split()
    assert "facelens.cli.video" in out
    assert [m for m in out if m in ("av", "numpy", "scipy", "facelens.engine", "facelens.video")] == []
