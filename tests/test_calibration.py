"""The impostor-score table: counting pairs, reading rates and thresholds, storing it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facelens import CalibrationError, InvalidArgumentError
from facelens.calibration import ScoreCalibration, build_calibration, impostor_histogram, load_calibration
from facelens.calibration.table import BIN_WIDTH, N_BINS, SCORE_LO, score_bins


def _table(scores: list[float], sha: str = "ab" * 32) -> ScoreCalibration:
    counts = np.zeros(N_BINS, np.int64)
    np.add.at(counts, score_bins(scores), 1)
    return ScoreCalibration(name="hand", model_sha256=sha, counts=counts)


def test_fmr_is_the_share_of_impostor_pairs_at_or_above_the_score() -> None:
    t = _table([0.1, 0.2, 0.2, 0.3, 0.5])  # 5 pairs
    assert t.n_pairs == 5
    assert t.fmr(-0.5) == (1.0, False)
    assert t.fmr(0.2) == (0.8, False)  # 0.2, 0.2, 0.3, 0.5: ties count as "at least"
    assert t.fmr(0.25) == (0.4, False)
    assert t.fmr(0.5) == (0.2, False)


def test_fmr_above_every_pair_is_an_upper_bound_at_the_resolution() -> None:
    t = _table([0.1, 0.2, 0.2, 0.3, 0.5])
    assert t.fmr(0.9) == (pytest.approx(0.2), True)
    assert t.resolution == pytest.approx(0.2)


def test_threshold_is_the_lowest_score_meeting_the_rate() -> None:
    t = _table([0.1, 0.2, 0.2, 0.3, 0.5])
    assert t.threshold(0.4) == pytest.approx(0.2 + BIN_WIDTH)  # above the two 0.2s: 0.3 and 0.5 remain
    assert t.threshold(0.2) == pytest.approx(0.3 + BIN_WIDTH)
    assert t.fmr(t.threshold(0.4)) == (0.4, False)
    assert t.threshold(1.0) == pytest.approx(SCORE_LO)
    for rate in (0.2, 0.4, 0.6, 1.0):  # match at threshold <=> fmr <= rate
        thr = t.threshold(rate)
        assert t.fmr(thr)[0] <= rate
        assert t.fmr(thr - BIN_WIDTH)[0] > rate or thr == pytest.approx(SCORE_LO)


def test_threshold_refuses_rates_below_what_the_data_measures() -> None:
    t = _table([0.1, 0.2, 0.2, 0.3, 0.5])
    with pytest.raises(InvalidArgumentError, match="below what calibration"):
        t.threshold(0.1)


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


def test_calibration_round_trips_and_is_bound_to_its_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(20, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cal = build_calibration(emb, np.arange(20) // 2, name="tiny", model_sha256="cd" * 32, meta={"dataset": "x"})
    path = tmp_path / "tiny.npz"
    cal.save(path)
    back = load_calibration(path, model_sha256="cd" * 32)
    assert back.name == "tiny" and back.n_pairs == 190 - 10 and back.meta["dataset"] == "x"
    np.testing.assert_array_equal(back.counts, cal.counts)
    with pytest.raises(CalibrationError, match="not comparable"):
        load_calibration(path, model_sha256="ef" * 32)


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
    assert cal.n_pairs > 80_000_000  # every impostor pair of LFW
    assert 0.0 < cal.threshold(1e-5) < 1.0
    assert cal.threshold(1e-6) > cal.threshold(1e-5) > cal.threshold(1e-3)
