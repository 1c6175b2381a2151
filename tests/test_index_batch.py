"""`facelens index` stores many images per transaction (Engine.prepare_index, then store_indexed): the same
faces, refusals and records as indexing the images one by one with Engine.index_faces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from facelens.accountability.actor import Actor
from facelens.accountability.log import SearchLog
from facelens.cli import main
from facelens.engine import Engine, IndexPlan
from facelens.errors import SearchLogError
from facelens.types import IndexResult

from .conftest import PORTRAITS


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The portraits, a group photo of four of them side by side, and a file that is no image."""
    out = tmp_path_factory.mktemp("to-index")
    photos = sorted(PORTRAITS.glob("*.jpg"))
    for p in photos:
        shutil.copy(p, out / p.name)
    tiles = [Image.open(p).convert("RGB").resize((200, 250)) for p in photos[:4]]
    group = Image.new("RGB", (800, 250))
    for i, tile in enumerate(tiles):
        group.paste(tile, (200 * i, 0))
    group.save(out / "group.jpg", quality=95)
    (out / "broken.jpg").write_bytes(b"not a jpeg at all")
    return out


def _faces(engine: Engine) -> dict[str, list[tuple[list[float], float]]]:
    """The stored faces by external image id: box and detection score, in box order."""
    faces, token = engine.list_faces("c", limit=1000)
    assert token is None
    out: dict[str, list[tuple[list[float], float]]] = {}
    for f in faces:
        out.setdefault(str(f.external_image_id), []).append((list(f.bbox), float(f.score)))
    return {k: sorted(v) for k, v in out.items()}


def _indexed_records(home: Path) -> list[dict[str, Any]]:
    log = SearchLog.open(home)
    try:
        return [e.body for e in log.iter_entries() if e.body["action"] == "faces_indexed"]
    finally:
        log.close()


def test_index_batch_stores_what_one_by_one_indexing_stores(folder: Path, tmp_path: Path) -> None:
    files = sorted(folder.glob("*.jpg"))
    one_home, batch_home = tmp_path / "one", tmp_path / "batch"
    me = Actor.python("test", "one by one")
    with Engine(home=str(one_home), threads=1) as engine:
        engine.create_collection("c")
        one: dict[str, dict[str, Any]] = {}
        for f in files:
            try:
                one[f.name] = engine.index_faces("c", str(f), external_image_id=f.name, actor=me).to_dict()
            except Exception as exc:  # the broken file: an error for it, the others indexed
                one[f.name] = {"error": type(exc).__name__}
        one_faces = _faces(engine)
    runner = CliRunner()
    assert runner.invoke(main, ["collection", "create", "c", "--home", str(batch_home)]).exit_code == 0
    result = runner.invoke(main, ["index", "c", str(folder), "--home", str(batch_home), "--workers", "2",
                                  "--batch", "3", "--json"])
    assert result.exit_code == 3, result.output  # the broken file: EXIT_INPUT, every other image indexed
    doc = json.loads(result.stdout)
    by_image = {Path(r["image"]).name: r for r in doc["images"]}
    assert [Path(r["image"]).name for r in doc["images"]] == [f.name for f in files]  # in order
    assert by_image["broken.jpg"]["error"]["type"] == one["broken.jpg"]["error"] == "ImageDecodeError"
    with Engine(home=str(batch_home), threads=1) as engine:
        batch_faces = _faces(engine)
    assert set(batch_faces) == set(one_faces) and len(one_faces["group.jpg"]) == 4
    for image, faces in one_faces.items():
        got = batch_faces[image]
        assert len(got) == len(faces), image
        for (box, score), (box1, score1) in zip(got, faces, strict=True):
            assert box == pytest.approx(box1, abs=0.01) and score == pytest.approx(score1, abs=1e-3), image
    for name, r in by_image.items():
        if name == "broken.jpg":
            continue
        assert len(r["indexed"]) == len(one[name]["indexed"]) and not r["already_indexed"], name
        assert [u["refusal_reasons"] for u in r["unindexed"]] == [u["refusal_reasons"] for u in one[name]["unindexed"]]
    # one faces_indexed record per image, naming the faces stored, as one by one
    records = _indexed_records(batch_home)
    assert len(records) == len(_indexed_records(one_home)) == len(files) - 1
    assert sorted(fid for r in records for fid in r["face_ids"]) == sorted(
        f["face_id"] for r in doc["images"] if "indexed" in r for f in r["indexed"])
    # run again: every image already indexed, nothing stored twice
    again = json.loads(runner.invoke(main, ["index", "c", str(folder), "--home", str(batch_home), "--batch", "5",
                                            "--json"]).stdout)
    assert again["summary"]["already_indexed"] == len(files) - 1 and again["summary"]["faces_indexed"] == 0


def test_index_batch_store_indexed_is_all_or_none(folder: Path, tmp_path: Path) -> None:
    """A batch whose record cannot be written stores none of its images, and none is reported stored."""
    with Engine(home=str(tmp_path)) as engine:
        engine.create_collection("c")
        me = Actor.python("test", "all or none")
        plans = [engine.prepare_index("c", str(f), external_image_id=f.name, actor=me)
                 for f in sorted(folder.glob("*_a.jpg"))[:3]]
        assert all(isinstance(p, IndexPlan) for p in plans)
        calls = 0
        real = engine.record

        def failing(actor: Any, record: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 3 and record.get("action") == "faces_indexed":
                raise SearchLogError("the log's disk is full")
            return real(actor, record)

        engine.record = failing  # type: ignore[method-assign]
        with pytest.raises(SearchLogError, match="disk is full"):
            engine.store_indexed("c", [p for p in plans if isinstance(p, IndexPlan)], actor=me)
        engine.record = real  # type: ignore[method-assign]
        assert engine.describe_collection("c").face_count == 0
        done = engine.store_indexed("c", [p for p in plans if isinstance(p, IndexPlan)], actor=me)
        assert all(isinstance(r, IndexResult) and len(r.indexed) == 1 for r in done)
        assert engine.describe_collection("c").face_count == 3


def test_index_batch_killed_mid_run_leaves_only_recorded_whole_batches(folder: Path, tmp_path: Path) -> None:
    """SIGKILL while indexing: every face stored has its record, and the next run stores the rest once."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cli = [sys.executable, "-m", "facelens"]
    home = tmp_path / "home"
    subprocess.run([*cli, "collection", "create", "c", "--home", str(home)], env=env, check=True,
                   capture_output=True)
    db = next(home.rglob("faces.sqlite"))
    proc = subprocess.Popen([*cli, "index", "c", str(folder), "--home", str(home), "--batch", "2", "--workers", "2",
                             "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    stored = 0
    while time.monotonic() < deadline and proc.poll() is None:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            stored = conn.execute("SELECT count(*) FROM images").fetchone()[0]
        if stored:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    assert stored, "nothing was stored before the kill"
    assert not out, "the killed run printed results it had not finished"  # --json reports at the end only
    with Engine(home=str(home)) as engine:
        faces, _ = engine.list_faces("c", limit=1000)
    recorded = {fid for r in _indexed_records(home) for fid in r["face_ids"]}
    assert {f.face_id for f in faces} <= recorded  # never stored unrecorded
    again = subprocess.run([*cli, "index", "c", str(folder), "--home", str(home), "--json"], env=env,
                           capture_output=True, text=True)
    summary = json.loads(again.stdout)["summary"]
    images = {str(f.external_image_id) for f in faces}
    assert summary["already_indexed"] == len(images) and summary["errors"] == 1  # broken.jpg
    assert summary["already_indexed"] + sum(1 for r in json.loads(again.stdout)["images"]
                                             if r.get("indexed") and not r["already_indexed"]) == len(
        list(folder.glob("*.jpg"))) - 1
