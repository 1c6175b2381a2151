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
    assert r.calibration == "pooled-buffalo_s" and r.operating_point.policy == "worst-group"
    assert r.face_a.bbox.width > r.face_b.bbox.width  # the 450x550 portrait vs the small one


def test_compare_different_people_do_not_match(engine: facelens.Engine) -> None:
    r = engine.compare(portrait("C001082"), portrait("B000444"))
    assert not r.match
    assert r.fmr > 1e-3 and not r.fmr_extrapolated
    assert r.score < r.threshold


def test_compare_decision_is_consistent_with_the_rate(engine: facelens.Engine) -> None:
    faces = {(p, w): engine.analyze(portrait(p, w))[0] for p in PEOPLE[:4] for w in "ab"}
    keys = sorted(faces)
    for rate in (1e-2, 1e-4, 1e-6):
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                r = engine.compare_faces(faces[a], faces[b], max_fmr=rate)
                assert r.match == (r.fmr <= rate)
                assert r.match == (r.score >= r.threshold)


def test_compare_thresholds_rise_as_the_rate_falls(engine: facelens.Engine) -> None:
    thresholds = [engine.threshold(rate) for rate in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)]
    assert thresholds == sorted(thresholds) and len(set(thresholds)) == len(thresholds)
    score = 0.5 * (thresholds[2] + thresholds[3])
    fmr, _ = engine.fmr(score)
    assert 1e-5 < fmr <= 1e-4


def test_compare_beyond_the_measured_rates_is_extrapolated_and_says_so(engine: facelens.Engine) -> None:
    r = engine.compare(portrait("C001082"), portrait("C001082", "b"), max_fmr=1e-7)
    assert r.operating_point.extrapolated and r.max_fmr == 1e-7
    assert r.to_dict()["extrapolated"] is True
    with pytest.raises(facelens.CalibrationError, match="needs at least"):  # beyond what the profile supports
        engine.compare(portrait("C001082"), portrait("C001082", "b"), max_fmr=1e-10)
    with pytest.raises(InvalidArgumentError, match="max_fmr"):
        engine.compare(portrait("C001082"), portrait("C001082", "b"), max_fmr=1.5)
    with pytest.raises(InvalidArgumentError, match="between"):
        engine.compare(portrait("C001082"), portrait("C001082", "b"), max_fmr=1e-15)


def test_operating_point_from_fpir_min_score_and_policy(engine: facelens.Engine) -> None:
    op = engine.operating_point(max_fpir=0.003, collection_size=1000)
    assert op.max_fpir == 0.003 and op.collection_size == 1000
    assert op.max_fmr == pytest.approx(3.0e-6, rel=1e-2)
    assert engine.operating_point(collection_size=1000).max_fpir == engine.config.max_fpir  # a search's default
    assert engine.operating_point(max_fpir=0.003, collection_size=10**4).threshold > op.threshold
    with pytest.raises(facelens.CalibrationError, match="too heavy"):  # no score keeps FPIR 0.003 at 1M faces
        engine.operating_point(max_fpir=0.003, collection_size=10**6)
    raw = engine.operating_point(min_score=0.5)
    assert raw.threshold == 0.5 and raw.max_fmr == engine.fmr(0.5)[0]
    overall = facelens.Engine(policy="overall").operating_point(max_fmr=1e-5)
    assert overall.limited_by == "overall" and overall.threshold <= engine.operating_point(max_fmr=1e-5).threshold
    with pytest.raises(InvalidArgumentError, match="at most one"):
        engine.operating_point(max_fmr=1e-5, max_fpir=0.01, collection_size=10)
    with pytest.raises(InvalidArgumentError, match="needs the collection"):
        engine.operating_point(max_fpir=0.01)


def test_compare_names_the_image_without_a_face(engine: facelens.Engine, tmp_path: object) -> None:
    blank = np.full((240, 240, 3), 200, np.uint8)
    with pytest.raises(NoFaceError, match="<array>: no face found"):
        engine.compare(portrait("C001082"), blank)


def test_compare_result_serialises_with_the_documented_keys(engine: facelens.Engine) -> None:
    d = engine.compare(portrait("A000368"), portrait("A000368", "b")).to_dict()
    assert {"score", "fmr", "fmr_extrapolated", "match", "max_fmr", "max_fpir", "collection_size", "threshold",
            "extrapolated", "policy", "limited_by", "calibration", "face_a", "face_b"} == set(d)
