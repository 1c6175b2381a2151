"""Audit metrics: intervals, pair histograms, verification rates, differentials, 1:N search, strangers."""

from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import pytest

from facelens import InvalidArgumentError
from facelens.audit.metrics import (
    GroupHistograms,
    PairHistograms,
    Rate,
    binomial_ci,
    demographic_differentials,
    det_curve,
    false_match_experiment,
    find_near_duplicates,
    fmr_at,
    fnmr_at,
    identification,
    lfw_accuracy,
    pair_histograms,
    tar_at_fmr,
    threshold_for_fmr,
    verification,
)
from facelens.calibration.table import N_BINS, score_bins


def _hist(scores: list[float]) -> npt.NDArray[np.int64]:
    h = np.zeros(N_BINS, np.int64)
    np.add.at(h, score_bins(scores), 1)
    return h


def _unit(*terms: tuple[int, float], d: int = 16) -> npt.NDArray[np.float32]:
    """A unit vector from (basis index, weight) terms."""
    v = np.zeros(d, np.float64)
    for i, w in terms:
        v[i] += w
    return (v / np.linalg.norm(v)).astype(np.float32)


def _random_set(n: int, d: int, n_subjects: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.str_]]:
    rng = np.random.default_rng(seed)
    subjects = rng.integers(0, n_subjects, n)
    centres = rng.normal(size=(n_subjects, d))
    emb = centres[subjects] + 0.8 * rng.normal(size=(n, d))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32), np.array([f"s{s}" for s in subjects])


# --- intervals and rates --------------------------------------------------------------------------------


def test_binomial_ci_matches_clopper_pearson_closed_forms() -> None:
    # k = 0 and k = n have closed forms: (alpha/2)^(1/n)
    low, high = binomial_ci(0, 10)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-9)  # 0.3085
    low, high = binomial_ci(10, 10)
    assert low == pytest.approx(0.025 ** (1 / 10), rel=1e-9) and high == 1.0  # 0.6915
    low, high = binomial_ci(5, 10)
    assert low == pytest.approx(0.187086, abs=1e-6) and high == pytest.approx(0.812914, abs=1e-6)
    low, high = binomial_ci(0, 3_000_000, confidence=0.9)
    assert high == pytest.approx(1 - 0.05 ** (1 / 3_000_000), rel=1e-6)


def test_binomial_ci_without_trials_says_nothing_and_refuses_nonsense() -> None:
    assert binomial_ci(0, 0) == (0.0, 1.0)
    with pytest.raises(InvalidArgumentError):
        binomial_ci(3, 2)
    with pytest.raises(InvalidArgumentError):
        binomial_ci(1, 2, confidence=1.0)


def test_rate_speaks_plain_words() -> None:
    assert Rate(1, 100_000, unit="comparisons of two different people").plain() == (
        "about 1 in 100,000 comparisons of two different people (1 of 100,000)")
    assert Rate(3, 120, unit="searches").plain() == "3 of 120 searches (2.5%)"
    assert Rate(1_080, 87_500_000, unit="pairs").plain().startswith("about 1 in 81,000 pairs")
    none = Rate(0, 1_000, unit="pairs", event="matched").plain()
    assert none.startswith("none of 1,000 pairs matched") and "1 in 270" in none
    assert Rate(0, 0, unit="pairs").plain() == "not measured: there were no pairs"
    d = Rate(0, 0).to_dict()
    assert d["value"] is None and (d["ci_low"], d["ci_high"]) == (0.0, 1.0)
    json.dumps(Rate(2, 7).to_dict(), allow_nan=False)


# --- pair histograms --------------------------------------------------------------------------------------


def _direct(emb: npt.NDArray[np.float32], subjects: npt.NDArray[np.str_], labels: npt.NDArray[np.str_],
            exclude: set[tuple[int, int]]) -> dict[str, dict[tuple[str, str], npt.NDArray[np.int64]]]:
    """Pair histograms the slow way: every pair on its own."""
    bins = score_bins(emb @ emb.T)
    out: dict[str, dict[tuple[str, str], npt.NDArray[np.int64]]] = {"gen": {}, "imp": {}}
    n = len(emb)
    for i in range(n):
        for j in range(i + 1, n):
            if (i, j) in exclude:
                continue
            kind = "gen" if subjects[i] == subjects[j] else "imp"
            keys = [("*", "*")]
            if labels[i] and labels[j]:
                keys.append((min(labels[i], labels[j]), max(labels[i], labels[j])))
            for key in keys:
                out[kind].setdefault(key, np.zeros(N_BINS, np.int64))[bins[i, j]] += 1
    return out


def test_pair_histograms_in_chunks_equal_the_direct_count() -> None:
    emb, subjects = _random_set(90, 8, 12, seed=1)
    rng = np.random.default_rng(2)
    labels = rng.choice(np.array(["a", "b", "c", ""]), size=len(emb))
    exclude = {(3, 40), (5, 6), (0, 89)}
    direct = _direct(emb, subjects, labels, exclude)
    zero = np.zeros(N_BINS, np.int64)
    for chunk in (7, 64, 1000):
        h = pair_histograms(emb, subjects, {"g": labels}, exclude=[(40, 3), (5, 6), (89, 0)], chunk=chunk)
        assert h.n_excluded == 3
        np.testing.assert_array_equal(h.genuine, direct["gen"][("*", "*")])
        np.testing.assert_array_equal(h.impostor, direct["imp"][("*", "*")])
        g = h.groups["g"]
        assert g.labels == ("a", "b", "c") and g.n_unknown == int((labels == "").sum())
        for i, a in enumerate(g.labels):
            np.testing.assert_array_equal(g.genuine[i], direct["gen"].get((a, a), zero))
            for j, b in enumerate(g.labels):
                key = (min(a, b), max(a, b))
                np.testing.assert_array_equal(g.cross_impostor[i, j], direct["imp"].get(key, zero))
    assert h.n_genuine + h.n_impostor == 90 * 89 // 2 - 3


def test_near_duplicates_are_found_and_set_aside() -> None:
    emb, _ = _random_set(40, 8, 40, seed=3)
    subjects = np.array([f"u{i}" for i in range(40)])  # every image its own subject, as in UTKFace
    emb[7] = emb[21]  # one person twice under two names
    dup = find_near_duplicates(emb, subjects, 0.95)
    assert dup.pairs.tolist() == [[7, 21]] and dup.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert "0.95" in dup.rule and dup.to_dict()["count"] == 1
    kept = pair_histograms(emb, subjects, exclude=dup.pairs)
    assert kept.n_excluded == 1 and kept.n_impostor == 40 * 39 // 2 - 1
    assert fmr_at(kept.impostor, 0.99).k == 0


# --- verification -------------------------------------------------------------------------------------------


def test_rates_count_a_score_on_the_threshold_as_a_match() -> None:
    imp = _hist([0.3, 0.5, 0.5, 0.7])
    gen = _hist([0.4, 0.5, 0.9])
    assert (fmr_at(imp, 0.5).k, fmr_at(imp, 0.5).n) == (3, 4)
    assert (fnmr_at(gen, 0.5).k, fnmr_at(gen, 0.5).n) == (1, 3)
    assert fmr_at(imp, 0.5001).k == 1 and fnmr_at(gen, 0.5001).k == 2
    assert fmr_at(np.zeros(N_BINS, np.int64), 0.5).value is None


def test_threshold_for_fmr_is_the_lowest_edge_meeting_the_target() -> None:
    imp = _hist([i / 100 for i in range(1, 11)])  # 0.01 ... 0.10
    assert threshold_for_fmr(imp, 0.2) == pytest.approx(0.0801)  # just above 0.08: 0.09 and 0.10 remain
    assert threshold_for_fmr(imp, 0.1) == pytest.approx(0.0901)
    assert threshold_for_fmr(imp, 0.05) is None  # below 1 / 10: not measurable
    assert fmr_at(imp, threshold_for_fmr(imp, 0.2) or 0).k == 2


def test_tar_at_fmr_marks_rates_below_the_resolution_not_measurable() -> None:
    imp = _hist([i / 1000 for i in range(1000)])  # 1,000 pairs in [0, 1)
    gen = _hist([0.995, 0.5, 0.9985, 0.2])
    rows = tar_at_fmr(gen, imp, (1e-2, 1e-3, 1e-4))
    assert [r.measurable for r in rows] == [True, True, False]
    # 1e-2 allows 10 pairs: 0.990 ... 0.999, so the threshold is the edge just above 0.989
    assert rows[0].threshold == pytest.approx(0.9891) and rows[0].fmr is not None and rows[0].fmr.k == 10
    assert rows[0].tar is not None and (rows[0].tar.k, rows[0].tar.n) == (2, 4)
    assert rows[1].threshold == pytest.approx(0.9981) and rows[1].tar is not None and rows[1].tar.k == 1
    assert rows[2].tar is None and "not measurable" in rows[2].note and "10,000" in rows[2].note
    json.dumps([r.to_dict() for r in rows], allow_nan=False)


def test_det_curve_runs_from_fmr_one_down_to_the_resolution() -> None:
    emb, subjects = _random_set(200, 8, 20, seed=4)
    h = pair_histograms(emb, subjects)
    det = det_curve(h.genuine, h.impostor, label="all")
    fmr, fnmr = np.array(det.fmr), np.array(det.fnmr)
    assert fmr[0] == 1.0 and fmr[-1] <= 1 / h.n_impostor + 1e-12
    assert np.all(np.diff(fmr) < 0) and np.all(np.diff(fnmr) >= 0) and np.all(np.diff(det.thresholds) > 0)
    for t, f, fn in zip(det.thresholds, det.fmr, det.fnmr, strict=True):
        assert fmr_at(h.impostor, t).value == f and fnmr_at(h.genuine, t).value == fn
    empty = det_curve(h.genuine, np.zeros(N_BINS, np.int64))
    assert empty.fmr == () and empty.n_impostor == 0


def test_lfw_accuracy_picks_each_folds_threshold_on_the_others() -> None:
    scores = [0.9, 0.8, 0.1, 0.2, 0.7, 0.3, 0.4, 0.0]
    same = [True, True, False, False, True, True, False, False]
    fold = [0, 0, 0, 0, 1, 1, 1, 1]
    acc = lfw_accuracy(scores, same, fold)
    # fold 0 tested with fold 1's best threshold (0.3 and 0.7 tie at 3/4: the lower wins) -> 4/4;
    # fold 1 tested with fold 0's (0.8, 4/4 there) -> only the two different-person pairs right
    assert acc.thresholds == (0.3, 0.8) and acc.folds == (1.0, 0.5)
    assert acc.mean == 0.75 and acc.std == 0.25 and acc.n_pairs == 8
    assert lfw_accuracy([0.9, -math.inf, 0.1, 0.2], [True, True, False, False], [0, 0, 1, 1]).mean <= 0.75


# --- demographic differentials ------------------------------------------------------------------------------


def _groups_fixture() -> PairHistograms:
    """Impostor pairs within F: 1,000 with 5 at 0.6; within M: 1,000 with none above 0.2; within X: 10
    pairs, 5 at 0.6 (too few for the ratio); F x M: 500 with 1 at 0.6. Genuine: F 200 with 20 below 0.5,
    M 200 with 2 below."""
    n_lab = 3
    cross = np.zeros((n_lab, n_lab, N_BINS), np.int64)
    cross[0, 0] = _hist([0.1] * 995 + [0.6] * 5)
    cross[1, 1] = _hist([0.1] * 1000)
    cross[2, 2] = _hist([0.1] * 5 + [0.6] * 5)
    cross[0, 1] = cross[1, 0] = _hist([0.1] * 499 + [0.6])
    gen = np.zeros((n_lab, N_BINS), np.int64)
    gen[0] = _hist([0.3] * 20 + [0.8] * 180)
    gen[1] = _hist([0.3] * 2 + [0.8] * 198)
    g = GroupHistograms(column="sex", labels=("F", "M", "X"), n_images=(60, 60, 5), n_unknown=3, genuine=gen,
                        cross_impostor=cross)
    empty = GroupHistograms(column="race", labels=(), n_images=(), n_unknown=125, genuine=np.zeros((0, N_BINS),
                            np.int64), cross_impostor=np.zeros((0, 0, N_BINS), np.int64))
    return PairHistograms(genuine=gen.sum(0), impostor=cross.sum((0, 1)) - cross[0, 1], n_images=128, n_excluded=0,
                          groups={"sex": g, "race": empty})


def test_differentials_name_the_worst_label_and_bound_a_ratio_over_zero() -> None:
    d = demographic_differentials(_groups_fixture(), 0.5, 1e-3, min_impostor_pairs=100)
    sex = d.columns[0]
    f, m, x = sex.per_label
    assert (f.fmr.k, f.fmr.n, m.fmr.k, m.fmr.n, x.fmr.k) == (5, 1000, 0, 1000, 5)
    assert (f.fnmr.k, f.fnmr.n, m.fnmr.k) == (20, 200, 2)
    assert sex.breaking_labels == ("F", "X") and f.breaks_target and not m.breaks_target
    assert f.clearly_breaks_target  # 5 in 1,000 is well above 1e-3
    assert sex.cross_fmr[0][1].k == 1 and sex.cross_fmr[1][0].n == 500
    r = sex.fmr_ratio
    assert (r.kind, r.highest_label, r.lowest_label, r.excluded_labels) == ("lower_bound", "F", "M", ("X",))
    assert r.ratio == pytest.approx(0.005 / (1 - 0.025 ** (1 / 1000)))  # about 1.36
    assert "no false match in 1,000 pairs" in r.explanation and "X" in r.explanation
    assert sex.fnmr_ratio.kind == "estimate" and sex.fnmr_ratio.ratio == pytest.approx(10.0)
    lo, hi = sex.fnmr_ratio.ratio_low, sex.fnmr_ratio.ratio_high
    assert lo is not None and hi is not None and lo < 10.0 < hi
    race = d.columns[1]
    assert race.per_label == () and race.fmr_ratio.kind == "undefined" and race.breaking_labels == ()
    json.dumps(d.to_dict(), allow_nan=False)


def test_differentials_default_minimum_and_no_false_match_anywhere() -> None:
    d = demographic_differentials(_groups_fixture(), 0.7, 1e-3)
    sex = d.columns[0]
    assert d.min_impostor_pairs == 10_000  # 10 / target: every label too small here
    assert sex.fmr_ratio.kind == "undefined" and "fewer than two labels" in sex.fmr_ratio.explanation
    d = demographic_differentials(_groups_fixture(), 0.7, 1e-3, min_impostor_pairs=100)
    assert d.columns[0].fmr_ratio.kind == "undefined" and d.columns[0].breaking_labels == ()


def test_a_label_with_ten_or_more_false_matches_is_compared_however_few_its_pairs() -> None:
    """Two labels far from the 10 / target pairs a clean label needs, but with many errors each: their
    rates are measured, so the ratio is estimated (UTKFace's children are such a case)."""
    cross = np.zeros((2, 2, N_BINS), np.int64)
    cross[0, 0] = _hist([0.1] * 900 + [0.6] * 100)
    cross[1, 1] = _hist([0.1] * 980 + [0.6] * 20)
    gen = np.zeros((2, N_BINS), np.int64)
    g = GroupHistograms(column="age", labels=("child", "adult"), n_images=(50, 50), n_unknown=0, genuine=gen,
                        cross_impostor=cross)
    h = PairHistograms(genuine=gen.sum(0), impostor=cross.sum((0, 1)), n_images=100, n_excluded=0, groups={"age": g})
    r = demographic_differentials(h, 0.5, 1e-5).columns[0].fmr_ratio
    assert (r.kind, r.highest_label, r.lowest_label) == ("estimate", "child", "adult")
    assert r.ratio == pytest.approx(5.0) and r.excluded_labels == ()


def test_verification_bundles_det_and_table_per_label() -> None:
    v = verification(_groups_fixture(), 0.5, fmrs=(1e-2, 1e-4))
    assert set(v.det_by_group["sex"]) == {"F", "M", "X"} and v.det_by_group["race"] == {}
    assert v.tar_at_fmr[1].measurable is False and v.fmr.n == 2510
    json.dumps(v.to_dict(), allow_nan=False)


# --- identification ------------------------------------------------------------------------------------------


def _gallery_fixture() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.str_], dict[str, npt.NDArray[np.str_]]]:
    """A and C: two identical photos each (mate score 1). B: two photos that score 0.36 with each other
    and 0.8 with A's or C's photo, whichever is enrolled, so B's mate ranks 2nd. Four one-photo people
    score 0.5 with A and at most 0.4 with anyone else, so every non-mated search tops out at 0.5."""
    a, c = _unit((0, 1.0)), _unit((2, 1.0))
    b1, b2 = _unit((1, 0.6), (0, 0.8)), _unit((1, 0.6), (2, 0.8))
    singles = [_unit((0, 0.5), (3 + i, math.sqrt(0.75))) for i in range(4)]
    emb = np.stack([a, a, b1, b2, c, c, *singles])
    subjects = np.array(["A", "A", "B", "B", "C", "C", "S0", "S1", "S2", "S3"])
    groups = {"g": np.array(["x", "x", "y", "y", "x", "x", "", "", "", ""])}
    return emb, subjects, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identification_on_a_known_gallery(seed: int) -> None:
    emb, subjects, groups = _gallery_fixture()
    res = identification(emb, subjects, groups, rng_seed=seed, fpirs=(0.5, 0.1), threshold=0.3, gallery_sizes=[2])
    assert (res.n_gallery, res.n_mated, res.n_nonmated, res.n_distractors, res.n_unused) == (5, 3, 2, 2, 0)
    assert (res.rank1.k, res.rank1.n, res.rank_n.k) == (2, 3, 3)
    p50, p10 = res.points
    assert p50.measurable and p50.threshold == pytest.approx(0.5, abs=1e-6)
    assert p50.fpir is not None and p50.fpir.k == 0  # both non-mated searches top out just below it
    assert p50.fnir is not None and (p50.fnir.k, p50.fnir.n) == (1, 3)  # B's mate scores 0.36
    assert not p10.measurable and "10 non-mated" in p10.note
    full = res.growth[-1]
    assert res.growth_threshold == 0.3 and [gp.gallery_size for gp in res.growth] == [2, 5]
    assert (full.fpir.k, full.fpir.n) == (2, 2) and full.fnir.k == 0  # at 0.3 B's mate is in, at rank 2
    x, y = res.groups["g"]
    assert (x.label, x.rank1.k, x.rank1.n, y.rank1.k, y.rank1.n) == ("x", 2, 2, 0, 1)
    assert y.fnir[0] is not None and y.fnir[0].k == 1 and y.fnir[1] is None
    strict = identification(emb, subjects, rng_seed=seed, fpirs=(), threshold=0.3, rank=1)
    assert strict.growth[-1].fnir.k == 1  # with one candidate, B's mate (2nd) is missed
    json.dumps(res.to_dict(), allow_nan=False)


def test_identification_fpir_grows_with_the_gallery() -> None:
    emb, subjects = _random_set(600, 8, 250, seed=5)
    res = identification(emb, subjects, gallery_sizes=[10, 50, 100], threshold=0.8)
    fpirs = [g.fpir.k for g in res.growth]
    assert [g.gallery_size for g in res.growth] == [10, 50, 100, res.n_gallery]
    assert fpirs == sorted(fpirs) and fpirs[-1] > fpirs[0]
    assert res.n_gallery + res.n_mated + res.n_nonmated + res.n_unused == 600
    # FNIR at each target's threshold is what the definition says, recomputed from the FPIR side
    for p in res.points:
        if p.measurable:
            assert p.fpir is not None and p.fpir.k <= math.floor(p.target_fpir * res.n_nonmated)


# --- false-match experiment ------------------------------------------------------------------------------------


def test_false_match_experiment_counts_strangers_above_each_threshold() -> None:
    s = math.sqrt
    probes = np.stack([_unit((0, 1.0)), _unit((1, 1.0)), _unit((2, 1.0)), _unit((3, 1.0))])
    gallery = np.stack([
        _unit((0, 0.85), (8, s(1 - 0.85**2))),  # a stranger at 0.85 for probe 0
        _unit((1, 0.75), (9, s(1 - 0.75**2))),  # a stranger at 0.75 for probe 1
        _unit((2, 0.99), (10, s(1 - 0.99**2))),  # probe 2 itself (same id): never counted
        _unit((3, 0.95), (11, s(1 - 0.95**2))),  # probe 3 under another name (listed overlap)
        _unit((3, 0.1), (12, s(1 - 0.1**2))),
    ])
    mates = np.stack([probes[0], _unit((1, 0.72), (13, s(1 - 0.72**2))), np.zeros(16, np.float32),
                      _unit((3, 0.5), (14, s(1 - 0.25)))])
    res = false_match_experiment(
        probes, ["p0", "p1", "p2", "p3"], {"sex": np.array(["F", "M", "M", ""])}, gallery,
        ["g0", "g1", "p2", "alias3", "g4"], [("aclu", 0.8, "80% similarity"), ("loose", 0.7, "")],
        mate_emb=mates, exclude={("p3", "alias3")}, top_n=3, gallery_paths=[f"/g/{i}.jpg" for i in range(5)])
    assert (res.n_probes, res.n_gallery, res.n_excluded_pairs) == (4, 5, 2)
    aclu, loose = res.points
    assert (aclu.probes_with_false_match.k, aclu.probes_with_false_match.n) == (1, 4)
    assert (loose.probes_with_false_match.k, loose.false_candidates) == (2, 2)
    assert aclu.by_group["sex"]["F"].k == 1 and aclu.by_group["sex"]["M"].k == 0
    assert loose.by_group["sex"]["M"].k == 1 and loose.by_group["sex"]["M"].n == 2
    assert aclu.mates_found is not None and (aclu.mates_found.k, aclu.mates_found.n) == (1, 3)
    assert loose.mates_found is not None and loose.mates_found.k == 2
    top = res.top_pairs
    assert [(t.probe_id, t.gallery_id) for t in top] == [("p0", "g0"), ("p1", "g1"), ("p3", "g4")]
    assert top[0].score == pytest.approx(0.85, abs=1e-5) and top[0].gallery_image == "/g/0.jpg"
    assert top[0].probe_image is None
    json.dumps(res.to_dict(), allow_nan=False)


def test_fpir_check_counts_searches_with_a_candidate_and_compares_with_the_prediction() -> None:
    from facelens.audit.metrics import fpir_check

    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(500, 128)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probes = rng.normal(size=(40, 128)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    probes[:5] = gallery[:5] * 0.7 + probes[:5] * 0.5  # 5 probes look like a gallery face (about 0.8)
    probes[5] = gallery[5]  # and one is the same photo: set aside
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    scores = probes @ gallery.T
    threshold = 0.7
    expected = int((np.where(scores < 0.9, scores, -1.0).max(axis=1) >= threshold).sum())
    seen: list[int] = []

    def op(n: int) -> tuple[float, float, bool]:
        seen.append(n)
        return threshold, 1e-4, True

    check = fpir_check(probes, gallery, [100, 10_000], op, lambda s: 1e-4, max_fpir=0.05)
    assert seen == [100, 500]  # a size beyond the gallery is the whole gallery
    whole = check.points[-1]
    assert whole.gallery_size == 500 and whole.measured.k == expected == 5 and whole.measured.n == 40
    assert check.duplicates_set_aside == 1
    assert whole.predicted_fpir == pytest.approx(1 - (1 - 1e-4) ** 500)
    assert whole.consistent == (whole.predicted_fpir / 3 <= whole.measured.ci_high)
    # the same person (by label) or the same photo (>= 0.9) is left out of a probe's search
    labels_p = np.array([f"g{i}" if i < 5 else f"p{i}" for i in range(40)])
    labels_g = np.array([f"g{i}" for i in range(500)])
    check = fpir_check(probes, gallery, [500], op, lambda s: 1e-4, probe_labels=labels_p, gallery_labels=labels_g)
    assert check.points[0].measured.k < expected
    d = check.to_dict()
    assert d["points"][0]["measured"]["n"] == 40 and "all_consistent" in d
    with pytest.raises(InvalidArgumentError, match="exclude needs"):
        fpir_check(probes, gallery, [500], op, lambda s: 1e-4, exclude=[("a", "b")])
