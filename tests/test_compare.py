"""compare: a score, the false-match rate it stands for, and a decision made at a rate."""

from __future__ import annotations

import numpy as np
import pytest

import facelens
from facelens import InvalidArgumentError, NoFaceError

from .conftest import PEOPLE, portrait


def test_compare_same_person_matches_at_the_default_rate(engine: facelens.Engine) -> None:
    r = engine.compare(portrait("C001082"), portrait("C001082", "b"))
    assert r.match and r.max_fmr == 1e-5
    assert r.fmr <= 1e-5 and r.score >= r.threshold
    assert r.calibration == "lfw-impostors-buffalo_s"
    assert r.face_a.bbox.width > r.face_b.bbox.width  # the 450x550 portrait vs the small one


def test_compare_different_people_do_not_match(engine: facelens.Engine) -> None:
    r = engine.compare(portrait("C001082"), portrait("B000444"))
    assert not r.match
    assert r.fmr > 1e-3 and not r.fmr_is_upper_bound
    assert r.score < r.threshold


def test_compare_decision_is_consistent_with_the_rate(engine: facelens.Engine) -> None:
    faces = {(p, w): engine.analyze(portrait(p, w))[0] for p in PEOPLE[:4] for w in "ab"}
    keys = sorted(faces)
    for rate in (1e-2, 1e-4, 1e-6):
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                r = engine.compare_faces(faces[a], faces[b], max_fmr=rate)
                assert r.match == (r.fmr <= rate) or r.fmr_is_upper_bound
                assert r.match == (r.score >= r.threshold)


def test_compare_thresholds_rise_as_the_rate_falls(engine: facelens.Engine) -> None:
    thresholds = [engine.threshold(rate) for rate in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)]
    assert thresholds == sorted(thresholds) and len(set(thresholds)) == len(thresholds)
    score = 0.5 * (thresholds[2] + thresholds[3])
    fmr, bound = engine.fmr(score)
    assert 1e-5 < fmr <= 1e-4 and not bound


def test_compare_refuses_rates_the_data_cannot_measure(engine: facelens.Engine) -> None:
    with pytest.raises(InvalidArgumentError, match="below what calibration"):
        engine.compare(portrait("C001082"), portrait("C001082", "b"), max_fmr=1e-10)
    with pytest.raises(InvalidArgumentError, match="max_fmr"):
        engine.compare(portrait("C001082"), portrait("C001082", "b"), max_fmr=1.5)


def test_compare_names_the_image_without_a_face(engine: facelens.Engine, tmp_path: object) -> None:
    blank = np.full((240, 240, 3), 200, np.uint8)
    with pytest.raises(NoFaceError, match="<array>: no face found"):
        engine.compare(portrait("C001082"), blank)


def test_compare_result_serialises_with_the_documented_keys(engine: facelens.Engine) -> None:
    d = engine.compare(portrait("A000368"), portrait("A000368", "b")).to_dict()
    assert {"score", "fmr", "fmr_is_upper_bound", "match", "max_fmr", "threshold", "calibration", "face_a",
            "face_b"} == set(d)
