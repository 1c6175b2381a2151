"""The impostor-score table: counting pairs, reading rates and thresholds, storing it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from facelens import CalibrationError, InvalidArgumentError, UnsupportedRateError
from facelens.calibration import ScoreCalibration, build_calibration, impostor_histogram, load_calibration
from facelens.calibration.table import (
    BIN_WIDTH,
    FORMAT_VERSION,
    MIN_FMR,
    N_BINS,
    SCORE_LO,
    ImpostorCurve,
    fpir_to_fmr,
    pairs_needed,
    score_bins,
)


def _counts(scores: list[float] | np.ndarray) -> np.ndarray:
    counts = np.zeros(N_BINS, np.int64)
    np.add.at(counts, score_bins(scores), 1)
    return counts


# 20 pairs: ten at 0.0, five at 0.1, three at 0.2, one at 0.3, one at 0.5
_HAND = [0.0] * 10 + [0.1] * 5 + [0.2] * 3 + [0.3, 0.5]


def test_fmr_is_an_exact_upper_bound_on_the_share_of_pairs_while_10_pairs_remain() -> None:
    c = ImpostorCurve("hand", _counts(_HAND))
    assert c.n_pairs == 20 and c.measured_floor == pytest.approx(0.5)
    assert c.fmr(-0.5) == (1.0, False) and c.fmr(0.0) == (1.0, False)  # ties count as "at least"
    assert c.fmr_estimate(0.05) == (0.5, False) and c.fmr_estimate(0.1) == (0.5, False)
    rate, extrapolated = c.fmr(0.05)  # 10 of 20 pairs: the one-sided 95% Clopper-Pearson bound
    assert not extrapolated and rate == pytest.approx(stats.beta.ppf(0.95, 11, 10))
    assert rate > 0.5


def test_a_curve_too_small_for_a_tail_refuses_rates_below_what_it_measures() -> None:
    c = ImpostorCurve("hand", _counts(_HAND))
    assert not c.tail_fitted and c.supported_floor == c.measured_floor  # 20 pairs: no tail to extrapolate with
    rate, extrapolated = c.fmr(0.15)  # 5 pairs above: the exact bound on the count, flagged
    assert extrapolated and rate == pytest.approx(stats.beta.ppf(0.95, 6, 15))
    with pytest.raises(UnsupportedRateError, match=r"20 impostor pairs.*needs at least 200 "):
        c.threshold(0.05)  # measured down to 10 / 200 pairs
    with pytest.raises(CalibrationError, match=r"needs at least 100,000,000 impostor pairs"):
        c.threshold(1e-9)  # 1,000 exceedances: read 2 decades below 10 / 1e8
    assert pairs_needed(0.5) == 20 and pairs_needed(1e-4) == 10_000 and pairs_needed(1e-5) == 100_000
    from facelens.server.errors import error_status

    with pytest.raises(UnsupportedRateError) as info:
        c.threshold(1e-6)
    assert isinstance(info.value, CalibrationError) and isinstance(info.value, InvalidArgumentError)
    assert error_status(info.value) == (422, "invalid_argument")  # a request to fix, not a server fault


def test_threshold_is_read_off_the_bound_then_the_tail_and_refused_beyond_three_decades() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(0.0, 0.07, 400_000)
    c = ImpostorCurve("normal", _counts(scores))
    assert c.tail_fitted and c.tail is not None
    assert 360 <= c.tail.exceedances <= 400 and c.tail.u == pytest.approx(np.quantile(scores, 1 - 1e-3), abs=2e-3)
    # 400 exceedances: read at most log10(400 / 10) = 1.6 decades below the measured floor
    assert -0.5 < c.tail.xi < 0.2  # a normal tail: shape near 0, bounded above
    assert c.supported_floor == pytest.approx(c.measured_floor * 10 / c.tail.exceedances)
    previous = -1.0
    for rate in (1e-1, 1e-2, 1e-3, 1e-4, 2.5e-5, 1e-5, 1e-6, 1e-7 * 7):
        thr, extrapolated = c.threshold(rate)
        assert extrapolated == (int((scores >= thr).sum()) < 10)  # flagged beyond the last 10 pairs
        assert thr >= previous  # stricter rates never get a lower threshold
        previous = thr
        assert c.fmr(thr)[0] <= rate * (1 + 1e-9)
        assert c.fmr(thr - BIN_WIDTH)[0] > rate or thr == pytest.approx(SCORE_LO)
        assert c.fmr_estimate(thr)[0] <= c.fmr(thr)[0]  # the bound is above the estimate
        # the bound holds against the truth: the normal's own tail at the threshold
        assert stats.norm.sf(thr, scale=0.07) <= rate
    with pytest.raises(CalibrationError, match="needs at least"):
        c.threshold(c.supported_floor / 2)


def test_the_gpd_tail_recovers_a_known_tail_and_its_bound_covers_the_truth() -> None:
    rng = np.random.default_rng(5)
    xi, sigma, u0 = -0.15, 0.03, 0.3
    body = rng.normal(0.0, 0.08, 2_000_000)
    body = body[body < u0]
    tail = u0 + stats.genpareto.rvs(xi, scale=sigma, size=4_000, random_state=rng)
    scores = np.concatenate([body, tail])
    n = len(scores)
    c = ImpostorCurve("gpd", _counts(scores))
    assert c.tail is not None and c.tail.u >= u0 - 1e-3  # u at FMR 1e-3 lies within the GPD part
    for rate in (1e-6, 3e-7, 6e-8):
        thr, extrapolated = c.threshold(rate)
        assert extrapolated
        truth = len(tail) / n * stats.genpareto.sf(thr - u0, xi, scale=sigma)
        assert truth <= rate  # the threshold keeps the true rate at or below the target
        est = c.fmr_estimate(thr)[0]
        assert truth / 10 <= est <= truth * 10 or truth < 1e-12


def test_worst_group_policy_takes_the_strictest_large_enough_group() -> None:
    rng = np.random.default_rng(1)
    overall = rng.normal(0.0, 0.07, 300_000)
    group_a = rng.normal(0.05, 0.07, 50_000)  # looks more alike: needs a higher threshold
    group_b = rng.normal(0.0, 0.05, 50_000)
    tiny = rng.normal(0.3, 0.07, 500)  # fewer than MIN_GROUP_PAIRS: kept, not used by the policy
    cal = ScoreCalibration(name="t", model_sha256="ab" * 32, counts=_counts(overall),
                           groups={"a": _counts(group_a), "b": _counts(group_b), "tiny": _counts(tiny)})
    thr, _, limited_by = cal.threshold_detail(1e-3)
    assert limited_by == "a" and thr == pytest.approx(cal.curves["a"].threshold(1e-3)[0])
    assert thr > cal.threshold(1e-3, "overall") == pytest.approx(cal.overall.threshold(1e-3)[0])
    assert [c.name for c in cal.policy_curves()] == ["overall", "a", "b"]
    rate, _, curve = cal.fmr_detail(thr)
    assert curve == "a" and rate <= 1e-3
    assert cal.fmr(thr, "overall")[0] < rate
    with pytest.raises(InvalidArgumentError, match="policy"):
        cal.threshold(1e-3, "best-group")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="between"):
        cal.threshold(1e-13)


def test_fpir_becomes_a_per_comparison_rate_by_collection_size() -> None:
    assert fpir_to_fmr(0.003, 1) == pytest.approx(0.003)
    fmr = fpir_to_fmr(0.003, 1_000_000)
    assert fmr == pytest.approx(3.0045e-9, rel=1e-4)
    assert 1 - (1 - fmr) ** 1_000_000 == pytest.approx(0.003, rel=1e-6)
    assert fpir_to_fmr(0.003, 0) == pytest.approx(0.003)  # an empty collection: as one comparison
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(InvalidArgumentError, match="max_fpir"):
            fpir_to_fmr(bad, 10)


def test_impostor_histogram_counts_every_pair_once() -> None:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(37, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = rng.integers(0, 6, 37)
    imp, gen = impostor_histogram(emb, labels, chunk=5)
    brute_imp, brute_gen = [], []
    for i in range(37):
        for j in range(i + 1, 37):
            (brute_gen if labels[i] == labels[j] else brute_imp).append(float(emb[i] @ emb[j]))
    assert imp.sum() == len(brute_imp) and gen.sum() == len(brute_gen)
    expected = np.zeros(N_BINS, np.int64)
    np.add.at(expected, score_bins(brute_imp), 1)
    assert np.abs(imp - expected).sum() <= 2  # float32 vs float64 rounding at bin edges


def test_calibration_round_trips_with_its_groups_and_is_bound_to_its_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(300, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.arange(300) // 2
    groups = {"sex=F": np.arange(300) < 200, "sex=M": np.arange(300) >= 200, "few": np.arange(300) < 10}
    cal = build_calibration(emb, labels, name="tiny", model_sha256="cd" * 32, meta={"dataset": "x"}, groups=groups,
                            min_group_pairs=100)
    assert sorted(cal.curves) == ["sex=F", "sex=M"]  # "few" has 40 pairs: left out, and said so
    assert cal.meta["groups_left_out"]["pairs"] == {"few": 40}
    assert cal.curves["sex=F"].n_pairs == 200 * 199 // 2 - 100
    path = tmp_path / "tiny.npz"
    cal.save(path)
    back = load_calibration(path, model_sha256="cd" * 32)
    assert back.name == "tiny" and back.n_pairs == 300 * 299 // 2 - 150 and back.meta["dataset"] == "x"
    np.testing.assert_array_equal(back.counts, cal.counts)
    for g in cal.curves:
        np.testing.assert_array_equal(back.curves[g].counts, cal.curves[g].counts)
    assert back.threshold(1e-2) == cal.threshold(1e-2)
    assert back.meta.get("format_version") == FORMAT_VERSION == 3
    assert cal.overall.tail is not None and back.overall.tail is not None  # the fit is stored, not redone
    np.testing.assert_array_equal(back.overall.tail.draws, cal.overall.tail.draws)
    assert back.threshold(3e-5) == cal.threshold(3e-5) and back.fmr(0.9) == cal.fmr(0.9)
    with pytest.raises(CalibrationError, match="not comparable"):
        load_calibration(path, model_sha256="ef" * 32)


def test_version_1_files_still_load(tmp_path: Path) -> None:
    import json

    counts = _counts(np.random.default_rng(3).normal(0.0, 0.07, 100_000))
    meta = {"name": "old", "model_sha256": "ab" * 32, "format_version": 1}
    np.savez_compressed(tmp_path / "old.npz", counts_overall=counts, meta=np.array(json.dumps(meta)))
    old = load_calibration(tmp_path / "old.npz")
    assert old.name == "old" and not old.curves and old.n_pairs == 100_000


def test_version_2_files_still_load_and_get_a_tail_fitted(tmp_path: Path) -> None:
    import json

    rng = np.random.default_rng(4)
    counts = _counts(rng.normal(0.0, 0.07, 200_000))
    group = _counts(rng.normal(0.02, 0.07, 20_000))
    meta = {"name": "v2", "model_sha256": "ab" * 32, "format_version": 2, "groups": ["g"], "fallback_slope": 16.0}
    np.savez_compressed(tmp_path / "v2.npz", counts_overall=counts, counts_group_0=group,
                        meta=np.array(json.dumps(meta)))
    old = load_calibration(tmp_path / "v2.npz")
    assert old.name == "v2" and sorted(old.curves) == ["g"] and "fallback_slope" not in old.meta
    assert old.overall.tail_fitted and old.threshold_detail(1e-5, "overall")[1]
    assert old.threshold(1e-3) == ScoreCalibration(name="x", model_sha256="ab" * 32, counts=counts,
                                                   groups={"g": group}).threshold(1e-3)


def test_load_calibration_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match="not a facelens calibration"):
        load_calibration(junk)


def test_shipped_calibration_matches_the_default_model() -> None:
    from facelens.models.backends import _CALIBRATION_DIR
    from facelens.models.files import KNOWN_FILES

    cal = load_calibration(_CALIBRATION_DIR / "buffalo_s.npz", model_sha256=KNOWN_FILES["w600k_mbf"].sha256)
    assert cal.meta["format_version"] == 3
    assert cal.n_pairs > 130_000_000  # LFW, congress-past and congress-historical, within and across sets
    assert {"lfw:sex=F", "lfw:sex=M", "set:congress-historical", "set:lfw"} <= set(cal.curves)
    assert all(c.tail is not None for c in cal.policy_curves())  # stored: reading refits nothing
    assert 0.0 < cal.threshold(1e-5) < 1.0
    assert cal.threshold(1e-6) > cal.threshold(1e-5) > cal.threshold(1e-3)
    assert cal.threshold(1e-5) >= cal.threshold(1e-5, "overall")
    assert cal.overall.tail_fitted and not cal.threshold_detail(1e-5, "overall")[1]
    assert cal.threshold_detail(1e-7)[1]  # beyond the last 10 of 138M pairs: extrapolated
    with pytest.raises(CalibrationError, match="needs at least"):
        cal.threshold(1e-11)  # 3 decades below what 138M pairs measure
    assert cal.fmr(0.999)[1] and cal.fmr(0.999)[0] >= MIN_FMR
