"""The optional dlib backend (facelens[dlib]): the models the face_recognition library runs."""

from __future__ import annotations

import numpy as np
import pytest

import facelens
from facelens.models.dlib_models import five_points

from .conftest import PEOPLE, portrait

pytest.importorskip("dlib")


def test_dlib_detects_and_embeds_128d_unit_vectors(dlib_engine: facelens.Engine) -> None:
    faces = dlib_engine.analyze(portrait("B001266"))
    assert len(faces) == 1
    f = faces[0]
    assert f.embedding is not None and f.embedding.shape == (128,)
    assert abs(float(np.linalg.norm(f.embedding)) - 1.0) < 1e-5
    le, re, nose, lm, rm = f.landmarks
    assert le[0] < nose[0] < re[0] and le[1] < nose[1] < lm[1]
    assert dlib_engine.embedding_size == 128 and dlib_engine.model_name == "dlib"


def test_dlib_same_person_scores_above_different_people(dlib_engine: facelens.Engine) -> None:
    emb = {(p, w): dlib_engine.embed(portrait(p, w)) for p in PEOPLE for w in "ab"}
    genuine = [float(emb[(p, "a")] @ emb[(p, "b")]) for p in PEOPLE]
    impostor = [float(emb[(p, "a")] @ emb[(q, "a")]) for p in PEOPLE for q in PEOPLE if p < q]
    assert np.median(genuine) > max(impostor)


def test_dlib_five_points_map_eye_corners_and_estimate_the_mouth() -> None:
    # dlib order: right-eye corners (picture right), left-eye corners, nose base
    dlib5 = np.array([[90, 50], [70, 50], [30, 50], [50, 50], [60, 80]], np.float32)
    le, re, nose, lm, rm = five_points(dlib5)
    np.testing.assert_allclose(le, [40, 50])
    np.testing.assert_allclose(re, [80, 50])
    np.testing.assert_allclose(nose, [60, 80])
    assert lm[0] < nose[0] < rm[0] and lm[1] > nose[1] and rm[1] > nose[1]


def test_dlib_embeddings_cannot_be_compared_with_buffalo_s(dlib_engine: facelens.Engine,
                                                           engine: facelens.Engine) -> None:
    face = dlib_engine.analyze(portrait("B001266"))[0]
    with pytest.raises(facelens.InvalidArgumentError, match="512-d"):
        engine.compare_faces(face, face)


def test_dlib_compare_uses_its_own_calibration(dlib_engine: facelens.Engine) -> None:
    r = dlib_engine.compare(portrait("B001266"), portrait("B001266", "b"), max_fmr=1e-3)
    assert r.calibration == "lfw-dlib" and r.match
    assert dlib_engine.threshold(1e-5) > dlib_engine.threshold(1e-3) > 0.9  # cosine of 128-d dlib encodings
    other = dlib_engine.compare(portrait("B001266"), portrait("C001079"), max_fmr=1e-3)
    assert not other.match and other.fmr > 1e-3
