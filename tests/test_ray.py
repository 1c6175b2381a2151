"""Batch enrolment on Ray Data (facelens.scale, ``facelens index --ray``): the same faces, ids, refusals and log
records as ``facelens index``; a killed worker or a killed driver, then a re-run: every image once.

Ray starts once for the module (an in-process local cluster of 2 CPUs); the CLI tests start their own
(``--ray local``) in their subprocess, as a user's command does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

import facelens
from facelens.accountability.actor import Actor
from facelens.accountability.log import SearchLog
from facelens.errors import ModelMismatchError
from facelens.scale import EmbeddedImage, embed_image
from facelens.scale.ray_index import ImageOutcome, index_with_ray, read_source
from facelens.types import RefusalReason

from .conftest import PORTRAITS

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'facelens[scale]'): Ray tests skipped")

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "FACELENS_THREADS": "1"}


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """One local Ray cluster of 2 CPUs for the module (Ray's start-up, ~10 s, paid once)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=200 * 1024 * 1024)
    yield
    ray.shutdown()


def _portraits(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in sorted(PORTRAITS.glob("*.jpg"))]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The portraits, two rotated copies, a mirrored one, a face-less image, and two files that are not
    images (one empty, one text)."""
    d = tmp_path_factory.mktemp("ray-folder")
    files = _portraits(d)
    Image.open(files[0]).rotate(90, expand=True).save(d / "rot90.jpg", quality=92)
    Image.open(files[3]).rotate(12, expand=True).save(d / "rot12.jpg", quality=92)
    ImageOps.mirror(Image.open(files[5])).save(d / "mirror.png")
    Image.new("RGB", (320, 240), (120, 140, 160)).save(d / "blank.jpg")
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("not an image\n")
    return d


def _cli(home: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facelens", *args, "--home", str(home)], capture_output=True,
                          text=True, env=ENV, timeout=timeout, cwd=ROOT)


def _indexed(home: Path) -> list[dict[str, Any]]:
    """The faces_indexed records of the home's signed log, in order."""
    log = SearchLog.open(home)
    try:
        return [e.body for e in log.iter_entries() if e.body.get("action") == "faces_indexed"]
    finally:
        log.close()


def _by_image(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {Path(r["image"]).name: r for r in doc["images"]}


@pytest.fixture(scope="module")
def cli_reference(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """`facelens index` (no Ray) of the folder: the reference."""
    home = tmp_path_factory.mktemp("ray-ref-home")
    assert _cli(home, "collection", "create", "c").returncode == 0
    out = _cli(home, "index", "c", str(folder), "--json")
    assert out.returncode == 3, out.stderr  # EXIT_INPUT: two files are not images
    return home, json.loads(out.stdout)


def test_ray_cli_same_faces_as_index(ray_local: None, folder: Path, cli_reference: tuple[Path, dict[str, Any]],
                                     tmp_path: Path) -> None:
    """`facelens index --ray local` finds, refuses, stores and records what `facelens index` does, image by
    image: the same external ids, face count, boxes (within a pixel), refusal reasons, failures and
    faces_indexed records; the stored embeddings are the reference's (cosine >= 0.9999)."""
    ref_home, ref = cli_reference
    home = tmp_path / "home"
    assert _cli(home, "collection", "create", "c").returncode == 0
    out = _cli(home, "index", "c", str(folder), "--ray", "local", "--ray-workers", "2", "--json")
    assert out.returncode == 3, out.stderr
    doc = json.loads(out.stdout)
    assert doc["summary"] == {**ref["summary"], "skipped": 0}
    assert ref["summary"]["faces_indexed"] >= 17 and ref["summary"]["errors"] == 2
    got, want = _by_image(doc), _by_image(ref)
    assert got.keys() == want.keys()
    for name, w in want.items():
        g = got[name]
        if "error" in w:
            assert g["error"] == w["error"], name
            assert name in g["error"]["message"]
            continue
        assert g["external_image_id"] == w["external_image_id"] == name
        assert len(g["indexed"]) == len(w["indexed"]), name
        for a, b in zip(g["indexed"], w["indexed"], strict=True):
            assert np.allclose(a["bbox"], b["bbox"], atol=1.0), name
            assert a["image_sha256"] == b["image_sha256"]
        assert [u["refusal_reasons"] for u in g["unindexed"]] == [u["refusal_reasons"] for u in w["unindexed"]]
        assert [np.allclose(u["bbox"], v["bbox"], atol=1.0) for u, v in zip(g["unindexed"], w["unindexed"],
                                                                              strict=True)].count(False) == 0
    assert got["blank.jpg"]["indexed"] == [] and not got["blank.jpg"]["already_indexed"]
    assert "empty" in got["empty.jpg"]["error"]["message"]

    def records(home: Path) -> Counter[tuple[Any, ...]]:
        return Counter((r["collection"], r["image_sha256"], len(r["face_ids"]), json.dumps(r["refused"]),
                        r["already_indexed"], r["actor"]["kind"]) for r in _indexed(home))

    assert records(home) == records(ref_home)
    with facelens.Engine(home=str(home), threads=1) as engine:
        for name, w in want.items():
            if "error" in w:
                continue
            for face in engine.analyze(str(folder / name)):
                if not any(np.allclose(face.bbox.as_list(), f["bbox"], atol=1.0) for f in w["indexed"]):
                    continue
                hit = engine.search_faces_by_embedding("c", face.embedding, min_score=0.9999, max_results=1)
                assert [m.external_image_id for m in hit.matches] == [name]

        # again (in this process's Ray): everything already indexed, nothing stored twice
        items = [(str(p), p.name) for p in sorted(folder.iterdir())]
        again = index_with_ray(engine, "c", items, workers=2)
        assert [o.result.already_indexed for o in again.outcomes if o.result] == [True] * (len(items) - 2)
        assert len(engine.list_faces("c", limit=1000)[0]) == ref["summary"]["faces_indexed"]


def test_ray_worker_killed_mid_run_then_rerun(ray_local: None, tmp_path: Path) -> None:
    """A worker process SIGKILLed after the first commit: Ray restarts it and retries its batch; every image is
    stored once, and a re-run (resume) finds nothing left to do."""
    d = tmp_path / "imgs"
    files = _portraits(d)
    for f in files:  # more work than one batch, each image distinct
        ImageOps.mirror(Image.open(f)).save(d / f"m_{f.name}", quality=92)
        Image.open(f).resize((int(Image.open(f).width * 0.8), int(Image.open(f).height * 0.8))).save(
            d / f"s_{f.name}", quality=92)
    images = sorted(d.glob("*.jpg"))
    engine = facelens.Engine(home=str(tmp_path / "home"), threads=1)
    engine.create_collection("c")
    killed: list[int] = []
    after_kill: list[ImageOutcome] = []

    def progress(done: int, total: int, out: Any) -> None:
        if killed:
            after_kill.extend(out)
            return
        pid = next(o.worker_pid for o in out if o.worker_pid is not None)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    report = index_with_ray(engine, "c", [(str(p), p.name) for p in images], workers=2, progress=progress,
                            worker_batch=2, commit_batch=2, actor=Actor.cli())
    assert killed and after_kill, "the worker was not killed while images were left"
    assert {o.worker_pid for o in after_kill} - set(killed), "no worker ran after the kill"
    assert [o.error for o in report.outcomes if o.error] == []
    assert sorted(o.external_image_id or "" for o in report.outcomes) == sorted(p.name for p in images)
    faces, token = engine.list_faces("c", limit=1000)
    assert token is None
    per_image = Counter(f.external_image_id for f in faces)
    assert set(per_image) == {p.name for p in images} and set(per_image.values()) == {1}
    assert len({f.image_sha256 for f in faces}) == len(images)
    again = index_with_ray(engine, "c", [(str(p), p.name) for p in images], workers=2, resume=True)
    assert again.skipped == len(images) and again.outcomes == ()
    assert len(engine.list_faces("c", limit=1000)[0]) == len(faces)
    assert len(_indexed(tmp_path / "home")) == len(images)  # one record per image, none for the re-run
    engine.close()


def _session_pids(sid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.getsid(int(p.name)) == sid:
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def test_ray_cli_driver_killed_then_resume(ray_local: None, tmp_path: Path) -> None:
    """`facelens index --ray local` SIGKILLed (with its Ray) mid-run: the faces committed stay, and a re-run
    (resume) completes the rest: every image once, none missing."""
    d = tmp_path / "imgs"
    files = _portraits(d)
    for f in files:
        for angle in (2, 4, 6, 8, -2, -4, -6, -8):  # 128 images: a first commit (32) well before the end
            Image.open(f).rotate(angle).save(d / f"r{angle}_{f.name}", quality=92)
    names = {p.name for p in d.glob("*.jpg")}
    home = tmp_path / "home"
    assert _cli(home, "collection", "create", "c").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "facelens", "index", "c", str(d), "--ray", "local",
                             "--ray-workers", "1", "--home", str(home)], env=ENV, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        committed = 0
        while time.monotonic() < deadline and proc.poll() is None:
            committed = sum(r["face_ids"] != [] for r in _indexed(home)) if (home / "service").exists() else 0
            if committed:
                break
            time.sleep(0.1)
    finally:
        for pid in _session_pids(proc.pid):  # the driver and the Ray it started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
    assert 0 < committed < len(names), f"not killed mid-run: {committed} of {len(names)} committed"
    with facelens.Engine(home=str(home), threads=1) as engine:  # the re-run, in this process's Ray
        before = {f.external_image_id for f in engine.list_faces("c", limit=1000)[0]}
        report = index_with_ray(engine, "c", [(str(p), p.name) for p in sorted(d.glob("*.jpg"))], workers=2,
                                resume=True, actor=Actor.cli())
        assert report.skipped == len(before) and len(report.outcomes) == len(names) - len(before)
        assert [o for o in report.outcomes if o.error or (o.result and o.result.already_indexed)] == []
        faces = engine.list_faces("c", limit=1000)[0]
    assert Counter(f.external_image_id for f in faces) == Counter(names)  # one face each: none twice, none missing


def test_ray_cli_list_file_and_bad_entries(ray_local: None, folder: Path, tmp_path: Path) -> None:
    """A list file (@FILE) of paths and file:// URIs: each is its own external id; a missing file and a
    non-image are failures with their reason, the others are indexed."""
    good = sorted(folder.glob("A*.jpg"))
    lst = tmp_path / "list.txt"
    lst.write_text("# images\n" + "\n".join([str(good[0]), "file://" + str(good[1]), str(folder / "missing.jpg"),
                                             str(folder / "notes.jpg")]) + "\n\n")
    engine = facelens.Engine(home=str(tmp_path / "home"), threads=1)
    engine.create_collection("c")
    from facelens.cli.collection import _expand_list

    items = _expand_list((f"@{lst}",))
    assert [i for _, i in items] == [str(good[0]), "file://" + str(good[1]), str(folder / "missing.jpg"),
                                     str(folder / "notes.jpg")]
    report = index_with_ray(engine, "c", items, workers=2)
    errors = {o.source: o.error for o in report.outcomes if o.error is not None}
    assert set(errors) == {str(folder / "missing.jpg"), str(folder / "notes.jpg")}
    assert "does not exist" in errors[str(folder / "missing.jpg")].message
    assert errors[str(folder / "notes.jpg")].error_type == "ImageDecodeError"
    assert read_source("file://" + str(good[1])) == good[1].read_bytes()
    stored = {f.external_image_id for f in engine.list_faces("c")[0]}
    assert stored == {str(good[0]), "file://" + str(good[1])}
    engine.close()


def test_index_embedded_enrolment_rules_as_index_faces(tmp_path: Path) -> None:
    """For a person, index_embedded applies index_faces's rules in order: the first image enrols, a stranger's
    face is refused (no match with the person), a second photo of the person passes its check; the same
    refusals, enrolment checks and records as index_faces image by image."""
    e = facelens.Engine(home=str(tmp_path), threads=1)
    e.create_collection("ref")
    e.create_collection("emb")
    assert e._pipeline is not None
    seq = [PORTRAITS / "A000368_a.jpg", PORTRAITS / "B000444_a.jpg", PORTRAITS / "A000368_b.jpg"]
    me = Actor.cli()
    want = [e.index_faces("ref", str(p), external_image_id=p.name, person_id="p1", actor=me) for p in seq]
    embedded = [embed_image(e._pipeline, p.read_bytes(), source=str(p), external_image_id=p.name,
                            model_sha256=e.model_sha256, embed_limit=1) for p in seq]
    got = e.index_embedded("emb", embedded, person_id="p1", actor=me)
    assert [len(r.indexed) for r in got] == [len(r.indexed) for r in want] == [1, 0, 1]
    assert RefusalReason.NO_MATCH_WITH_PERSON in got[1].unindexed[0].refusal_reasons
    assert [[f.refusal_reasons for f in r.unindexed] for r in got] == [[f.refusal_reasons for f in r.unindexed]
                                                                       for r in want]
    assert [[c.passed for c in r.enrolment] for r in got] == [[c.passed for c in r.enrolment] for r in want]
    recs = _indexed(tmp_path)
    varies = ("face_ids", "collection", "enrolment", "time", "seq", "prev_hash")
    strip = [{k: v for k, v in r.items() if k not in varies} | {
        "n": len(r["face_ids"]), "passed": [c.get("passed") for c in r.get("enrolment", [])]} for r in recs]
    assert strip[:3] == strip[3:]
    # the same image again, twice in one call: stored once, reported already indexed
    again = e.index_embedded("emb", [embedded[0], embedded[0]])
    assert [r.already_indexed for r in again] == [True, True]
    assert again[0].indexed == got[0].indexed
    e.close()


def test_index_embedded_refuses_another_model(tmp_path: Path) -> None:
    """Faces embedded by another model are refused: they are not comparable with the collection's."""
    e = facelens.Engine(home=str(tmp_path), threads=1)
    e.create_collection("c")
    im = EmbeddedImage(source="x.jpg", external_image_id="x.jpg", image_sha256="0" * 64, model_sha256="f" * 64,
                       faces=())
    with pytest.raises(ModelMismatchError, match="x.jpg"):
        e.index_embedded("c", [im])
    assert e.list_faces("c")[0] == []
    e.close()


def test_ray_missing_says_how_to_install(tmp_path: Path) -> None:
    """Without Ray, --ray fails with exit 2 and the install line, before anything is indexed."""
    home = tmp_path / "home"
    assert _cli(home, "collection", "create", "c").returncode == 0
    code = ("import sys; sys.modules['ray'] = None; from facelens.cli import run; "
            f"sys.argv = ['facelens', 'index', 'c', {str(PORTRAITS / 'A000368_a.jpg')!r}, '--ray', 'local', "
            f"'--home', {str(home)!r}]; run()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "pip install 'facelens[scale]'" in out.stderr
    out = _cli(home, "index", "c", str(PORTRAITS / "A000368_a.jpg"), "--resume")
    assert out.returncode == 2 and "apply to --ray" in out.stderr
