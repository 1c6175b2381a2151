"""Pose estimate, quality filter levels and alignment: pure functions, exact expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest

import facelens
from facelens import InvalidArgumentError, Pose, Quality, QualityFilter, RefusalReason
from facelens.align import ARCFACE_TEMPLATE_112, align_face, similarity_transform
from facelens.quality import LIMITS, estimate_pose, refusal_reasons

from .conftest import PORTRAITS


def _rotate(points: np.ndarray, degrees: float, centre: tuple[float, float] = (56, 56)) -> np.ndarray:
    t = math.radians(degrees)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return (points - centre) @ rot.T + centre


def test_pose_of_the_template_is_straight_but_reads_as_looking_up() -> None:
    """The ArcFace template's nose sits higher between eyes and mouth than a detected frontal face's.

    Pitch is centred on real frontal portraits (test below), so the template reads about +16 degrees.
    """
    pose = estimate_pose(ARCFACE_TEMPLATE_112)
    assert abs(pose.yaw) < 1 and abs(pose.roll) < 1
    assert pose.pitch == pytest.approx(15.9, abs=0.5)


def test_pose_pitch_of_frontal_official_portraits_averages_zero(engine: facelens.Engine) -> None:
    """The 16 bundled portraits are frontal official photos: pitch ~0 on average (it read -13 before)."""
    pitches = [engine.detect(p)[0].pose.pitch for p in sorted(PORTRAITS.glob("*.jpg"))]
    assert len(pitches) == 16
    assert abs(float(np.mean(pitches))) < 3
    assert max(abs(p) for p in pitches) < 20


@pytest.mark.parametrize("angle", [-30.0, -10.0, 15.0, 40.0])
def test_pose_roll_follows_in_plane_rotation(angle: float) -> None:
    upright = estimate_pose(ARCFACE_TEMPLATE_112)
    pose = estimate_pose(_rotate(ARCFACE_TEMPLATE_112.astype(np.float64), angle))
    assert pose.roll == pytest.approx(angle, abs=0.5)
    assert abs(pose.yaw) < 1 and pose.pitch == pytest.approx(upright.pitch, abs=1)  # roll does not leak


def test_pose_yaw_sign_and_mirror_symmetry() -> None:
    turned = ARCFACE_TEMPLATE_112.astype(np.float64).copy()
    turned[2, 0] += 12  # nose moves to the picture's right: the face turns that way
    mirrored = turned.copy()
    mirrored[:, 0] = 112 - mirrored[:, 0]
    mirrored = mirrored[[1, 0, 2, 4, 3]]  # left/right swap roles in a mirror image
    yaw = estimate_pose(turned).yaw
    assert yaw > 10
    assert estimate_pose(mirrored).yaw == pytest.approx(-yaw, abs=1e-6)


def test_pose_pitch_sign() -> None:
    straight = estimate_pose(ARCFACE_TEMPLATE_112).pitch
    up = ARCFACE_TEMPLATE_112.astype(np.float64).copy()
    up[2, 1] -= 8  # nose tip projects towards the eyes when the face looks up
    down = ARCFACE_TEMPLATE_112.astype(np.float64).copy()
    down[2, 1] += 8
    assert estimate_pose(up).pitch > straight + 5 and estimate_pose(down).pitch < straight - 5


_GOOD = Quality(sharpness=60, brightness=50, face_size=120)
_FRONTAL = Pose(yaw=0, pitch=0, roll=0)


def test_refusal_reasons_empty_for_a_good_face_at_every_level() -> None:
    for level in QualityFilter:
        assert refusal_reasons(0.9, _FRONTAL, _GOOD, level) == ()


@pytest.mark.parametrize(
    ("score", "pose", "quality", "reason"),
    [
        (0.9, _FRONTAL, Quality(60, 50, 10), RefusalReason.SMALL_BOUNDING_BOX),
        (0.9, _FRONTAL, Quality(1, 50, 120), RefusalReason.LOW_SHARPNESS),
        (0.9, _FRONTAL, Quality(60, 3, 120), RefusalReason.LOW_BRIGHTNESS),
        (0.9, Pose(yaw=85, pitch=0, roll=0), _GOOD, RefusalReason.EXTREME_POSE),
        (0.9, Pose(yaw=0, pitch=-70, roll=0), _GOOD, RefusalReason.EXTREME_POSE),
        (0.3, _FRONTAL, _GOOD, RefusalReason.LOW_CONFIDENCE),
    ],
)
def test_refusal_reasons_name_each_failure(score: float, pose: Pose, quality: Quality, reason: RefusalReason) -> None:
    for level in (QualityFilter.LOW, QualityFilter.MEDIUM, QualityFilter.HIGH, QualityFilter.AUTO):
        assert reason in refusal_reasons(score, pose, quality, level)
    assert refusal_reasons(score, pose, quality, QualityFilter.NONE) == ()


@pytest.mark.parametrize("level", [QualityFilter.LOW, QualityFilter.MEDIUM, QualityFilter.AUTO, QualityFilter.HIGH])
def test_a_low_second_look_score_is_low_confidence(level: QualityFilter) -> None:
    floor = LIMITS[level].min_confirmed_score
    assert refusal_reasons(0.9, _FRONTAL, _GOOD, level, confirmed_score=floor - 0.01) == (
        RefusalReason.LOW_CONFIDENCE,)
    assert refusal_reasons(0.9, _FRONTAL, _GOOD, level, confirmed_score=floor) == ()
    assert refusal_reasons(0.9, _FRONTAL, _GOOD, level, confirmed_score=None) == ()  # no second look
    assert refusal_reasons(0.9, _FRONTAL, _GOOD, QualityFilter.NONE, confirmed_score=0.0) == ()


def test_quality_levels_are_ordered_from_lenient_to_strict() -> None:
    low, med, high = LIMITS[QualityFilter.LOW], LIMITS[QualityFilter.MEDIUM], LIMITS[QualityFilter.HIGH]
    for attr in ("min_face_size", "min_score", "min_sharpness", "min_brightness"):
        assert getattr(low, attr) <= getattr(med, attr) <= getattr(high, attr)
    assert LIMITS[QualityFilter.LOW].min_confirmed_score <= LIMITS[QualityFilter.MEDIUM].min_confirmed_score
    assert LIMITS[QualityFilter.MEDIUM].min_confirmed_score <= LIMITS[QualityFilter.HIGH].min_confirmed_score
    for attr in ("max_yaw", "max_pitch"):
        assert getattr(low, attr) >= getattr(med, attr) >= getattr(high, attr)
    # a face only the lenient level accepts
    borderline = Quality(sharpness=10, brightness=50, face_size=30)
    assert refusal_reasons(0.9, _FRONTAL, borderline, QualityFilter.LOW) == ()
    assert refusal_reasons(0.9, _FRONTAL, borderline, QualityFilter.HIGH)


def test_quality_filter_parse_accepts_any_case_and_refuses_unknown() -> None:
    assert QualityFilter.parse("high") is QualityFilter.HIGH
    with pytest.raises(InvalidArgumentError, match="NONE, AUTO, LOW, MEDIUM, HIGH"):
        QualityFilter.parse("strict")


def test_similarity_transform_recovers_a_known_transform() -> None:
    src = ARCFACE_TEMPLATE_112.astype(np.float64)
    t = math.radians(25)
    scale, shift = 2.5, np.array([40.0, -7.0])
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    dst = scale * src @ rot.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_align_face_puts_landmarks_on_the_template() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    landmarks = _rotate(ARCFACE_TEMPLATE_112.astype(np.float64) * 1.7 + 60, 12, centre=(150, 150))
    crop = align_face(img, landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    m = similarity_transform(landmarks, ARCFACE_TEMPLATE_112)
    mapped = landmarks @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, ARCFACE_TEMPLATE_112, atol=1e-4)


def test_quality_limits_table_in_the_docs_matches_the_code() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "quality.md").read_text()
    rows = {line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:9]]
            for line in doc.splitlines() if line.startswith(("| LOW |", "| MEDIUM / AUTO |", "| HIGH |"))}
    for name, level in (("LOW", QualityFilter.LOW), ("MEDIUM / AUTO", QualityFilter.MEDIUM),
                        ("HIGH", QualityFilter.HIGH)):
        lim = LIMITS[level]
        assert rows[name] == [lim.min_face_size, lim.min_score, lim.min_sharpness, lim.min_brightness,
                              lim.max_yaw, lim.max_pitch, lim.min_confirmed_score]
