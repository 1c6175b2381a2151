"""The operating-point memo (issue 14): a search's threshold and the rates it reports are read once per
(rate, policy) and (score bin, policy) from the calibration profile, and must equal the fresh computation
for the same inputs, never a stale value after the gallery or the policy changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import facelens
from facelens import CollectionPolicy
from facelens.calibration.table import POLICIES, ScoreCalibration, fpir_to_fmr
from facelens.errors import UnsupportedRateError

from .conftest import PEOPLE, portrait

OPEN = CollectionPolicy(disclose_before_review=True)


@pytest.fixture(scope="module")
def eng(tmp_path_factory: pytest.TempPathFactory) -> Iterator[facelens.Engine]:
    """An engine whose ``c`` collection holds each person's first portrait."""
    e = facelens.Engine(home=str(tmp_path_factory.mktemp("opcache-home")), threads=2)
    e.create_collection("c", policy=OPEN)
    for person in PEOPLE:
        e.index_faces("c", portrait(person, "a"), external_image_id=f"{person}_a")
    yield e
    e.close()


@pytest.fixture
def cal(eng: facelens.Engine) -> ScoreCalibration:
    c = eng.collection_calibration("c")
    c.clear_cache()
    return c


def _query(eng: facelens.Engine) -> np.ndarray:
    q = np.random.default_rng(7).standard_normal(eng.embedding_size).astype(np.float32)
    return q / np.linalg.norm(q)


def test_memoised_threshold_equals_fresh_computation_over_sizes_rates_policies(cal: ScoreCalibration) -> None:
    rates = [fpir_to_fmr(fpir, n) for fpir in (0.3, 0.01, 0.003) for n in (1, 16, 1000, 10**5, 10**6)]
    rates += [1e-2, 1e-3, 1e-4, 1e-6]
    seen_refusal = seen_extrapolated = False
    for policy in POLICIES:  # both policies on the one memo: the key must tell them apart
        for rate in rates:
            try:
                want = cal.compute_threshold(rate, policy)
            except UnsupportedRateError:
                seen_refusal = True
                for _ in range(2):  # a refusal is not remembered as anything else
                    with pytest.raises(UnsupportedRateError):
                        cal.threshold_detail(rate, policy)
                continue
            seen_extrapolated |= want[1]
            assert cal.threshold_detail(rate, policy) == want  # computed and memoised
            assert cal.threshold_detail(rate, policy) == want  # read from the memo
    assert seen_extrapolated and seen_refusal  # the tail and the refusal were both exercised


def test_memoised_rates_equal_fresh_computation(cal: ScoreCalibration) -> None:
    scores = np.r_[np.linspace(-0.2, 1.0, 121), [0.5, 0.50004, 0.50005, 1.0]]
    for policy in POLICIES:
        want = [cal.compute_fmr(float(s), policy) for s in scores]
        assert [cal.fmr_detail(float(s), policy) for s in scores] == want
        assert [cal.fmr_detail(float(s), policy) for s in scores] == want
    assert any(extrapolated for _, extrapolated, _ in want)


def _expected(cal: ScoreCalibration, rate: float, policy: str) -> tuple[float, bool, str]:
    return cal.compute_threshold(rate, policy)  # type: ignore[arg-type]


def test_search_reports_the_fresh_operating_point(eng: facelens.Engine, cal: ScoreCalibration) -> None:
    q, size, policy = _query(eng), len(PEOPLE), eng.policy
    cases: list[tuple[dict[str, object], float]] = [
        ({}, fpir_to_fmr(eng.config.max_fpir, size)),
        ({"max_fpir": 0.01}, fpir_to_fmr(0.01, size)),
        ({"max_fmr": 1e-4}, 1e-4),
        ({"mode": "investigate"}, eng.lead_floor("c")),
    ]
    for _ in range(2):  # the second round reads the memo
        for options, rate in cases:
            op = eng.search_faces_by_embedding("c", q, **options).operating_point  # type: ignore[arg-type]
            assert (op.threshold, op.extrapolated, op.limited_by) == _expected(cal, rate, policy), options
            assert op.max_fmr == rate and op.collection_size == size
        op = eng.search_faces_by_embedding("c", q, min_score=0.4).operating_point
        assert (op.max_fmr, op.extrapolated, op.limited_by) == cal.compute_fmr(0.4, policy)


def test_grown_gallery_and_changed_policy_give_new_thresholds(eng: facelens.Engine, cal: ScoreCalibration) -> None:
    q, policy = _query(eng), eng.policy
    small = eng.search_faces_by_embedding("c", q).operating_point
    assert small.collection_size == len(PEOPLE)
    added = [eng.index_faces("c", portrait(p, "b"), external_image_id=f"{p}_b") for p in PEOPLE]
    try:
        grown = eng.search_faces_by_embedding("c", q).operating_point
        assert grown.collection_size == 2 * len(PEOPLE)
        rate = fpir_to_fmr(eng.config.max_fpir, 2 * len(PEOPLE))
        assert grown.max_fmr == rate and grown.threshold == _expected(cal, rate, policy)[0]
        assert grown.threshold > small.threshold  # twice the faces: a stricter threshold, not the stale one
        eng.set_collection_policy("c", {"max_fpir": 1e-4})  # a floor stricter than the default 0.003
        floored = eng.search_faces_by_embedding("c", q).operating_point
        assert floored.threshold == _expected(cal, fpir_to_fmr(1e-4, 2 * len(PEOPLE)), policy)[0]
        assert floored.threshold > grown.threshold
        eng.set_collection_policy("c", {"max_fpir": None})
        assert eng.search_faces_by_embedding("c", q).operating_point.threshold == grown.threshold
    finally:
        eng.set_collection_policy("c", OPEN)
        eng.delete_faces("c", [f["face_id"] for r in added for f in r.indexed])
    assert eng.search_faces_by_embedding("c", q).operating_point.threshold == small.threshold


def test_memo_is_bounded(cal: ScoreCalibration, monkeypatch: pytest.MonkeyPatch) -> None:
    from facelens.calibration import table

    monkeypatch.setattr(table, "_CACHE_LIMIT", 4)
    rates = [fpir_to_fmr(0.3, n) for n in range(1, 11)]
    for rate in rates:
        assert cal.threshold_detail(rate) == cal.compute_threshold(rate)
        assert len(cal._thresholds) <= 4
    assert [cal.threshold_detail(r) for r in rates] == [cal.compute_threshold(r) for r in rates]


def test_profile_file_unchanged(tmp_path: Path, cal: ScoreCalibration) -> None:
    """The memo is no part of the profile: a saved and re-read profile reads the same thresholds."""
    cal.threshold_detail(1e-3)
    cal.save(tmp_path / "p.npz")
    again = facelens.calibration.load_calibration(tmp_path / "p.npz")
    assert again.threshold_detail(1e-3) == cal.compute_threshold(1e-3)
