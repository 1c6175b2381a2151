"""Detection, alignment and embedding on real photos (bundled public-domain portraits)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import facelens
from facelens import ImageDecodeError, ImageTooLargeError, NoFaceError, RefusalReason

from .conftest import PEOPLE, load_rgb, portrait


def _same_face(a: facelens.Face, b: facelens.Face) -> float:
    assert a.embedding is not None and b.embedding is not None
    return float(a.embedding @ b.embedding)


def test_detect_one_face_in_a_portrait(engine: facelens.Engine) -> None:
    rgb = load_rgb(portrait("B000444"))
    faces = engine.analyze(rgb)
    assert len(faces) == 1
    f = faces[0]
    h, w = rgb.shape[:2]
    assert 0 <= f.bbox.left < f.bbox.right <= w and 0 <= f.bbox.top < f.bbox.bottom <= h
    assert 150 < f.bbox.width < 350  # the 450x550 portrait's face is about 220 px wide
    for x, y in f.landmarks:
        assert f.bbox.left <= x <= f.bbox.right and f.bbox.top <= y <= f.bbox.bottom
    le, re, nose, lm, rm = f.landmarks
    assert le[0] < re[0] and lm[0] < rm[0] and le[1] < nose[1] < lm[1]
    assert 0.5 <= f.score <= 1.0
    assert f.embedding is not None and f.embedding.dtype == np.float32 and f.embedding.shape == (512,)
    assert abs(float(np.linalg.norm(f.embedding)) - 1.0) < 1e-5
    assert abs(f.pose.yaw) < 25 and abs(f.pose.roll) < 10
    assert f.acceptable, f.refusal_reasons


def test_detect_does_not_embed(engine: facelens.Engine) -> None:
    faces = engine.detect(portrait("C001079"))
    assert len(faces) == 1 and faces[0].embedding is None


def test_detect_several_faces_sorted_by_size(engine: facelens.Engine) -> None:
    canvas = np.full((700, 1400, 3), 200, np.uint8)
    x = 10
    for person, which, scale in [("B001266", "a", 0.6), ("C000380", "a", 0.36), ("C001079", "b", 0.72),
                                 ("D000601", "b", 0.9)]:
        im = Image.open(portrait(person, which)).convert("RGB")
        a = np.asarray(im.resize((int(im.width * scale), int(im.height * scale))))
        canvas[20 : 20 + a.shape[0], x : x + a.shape[1]] = a
        x += a.shape[1] + 20
    faces = engine.analyze(canvas)
    assert len(faces) == 4
    areas = [f.bbox.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    # each face is nearest to the right person's other photo... at least to its own source photo
    sources = {p: engine.analyze(portrait(p, w))[0] for p, w in
               [("B001266", "a"), ("C000380", "a"), ("C001079", "b"), ("D000601", "b")]}
    for f in faces:
        best = max(sources, key=lambda p: _same_face(f, sources[p]))
        assert _same_face(f, sources[best]) > 0.8
    assert len({max(sources, key=lambda p: _same_face(f, sources[p])) for f in faces}) == 4
    assert len(engine.analyze(canvas, max_faces=2)) == 2


def test_detect_no_face_in_a_face_free_image(engine: facelens.Engine) -> None:
    rgb = load_rgb(portrait("B001266"))
    assert engine.detect(np.ascontiguousarray(rgb[:80, :200])) == []  # backdrop above the head
    assert engine.detect(np.full((300, 300, 3), 128, np.uint8)) == []


def test_detect_one_pixel_image_finds_nothing(engine: facelens.Engine) -> None:
    assert engine.detect(np.zeros((1, 1, 3), np.uint8)) == []
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    assert engine.detect(buf.getvalue()) == []


def test_detect_partial_face_scores_lower_and_is_refused_when_strict(engine: facelens.Engine) -> None:
    rgb = load_rgb(portrait("B001266"))
    whole = engine.analyze(rgb)[0]
    left, right = int(whole.bbox.left), int(whole.bbox.right)
    half = np.ascontiguousarray(rgb[:, left + int(0.6 * (right - left)) :])  # 40% of the face
    faces = engine.analyze(half, quality_filter="HIGH")
    assert len(faces) <= 1
    if faces:
        assert faces[0].score < whole.score
        assert faces[0].refusal_reasons
        assert _same_face(faces[0], whole) < 0.9


def test_detect_tight_crop_that_fills_the_frame(engine: facelens.Engine) -> None:
    rgb = load_rgb(portrait("B001266"))
    whole = engine.analyze(rgb)[0]
    b = whole.bbox
    crop = rgb[int(b.top) : int(b.bottom), int(b.left) : int(b.right)]
    big = cv2.resize(crop, (700, 900))  # an ID-photo crop, enlarged: a plain 640 letterbox misses it
    faces = engine.analyze(big)
    assert len(faces) == 1
    assert _same_face(faces[0], whole) > 0.85


def test_detect_exif_rotated_jpeg_is_upright(engine: facelens.Engine, tmp_path: Path) -> None:
    im = Image.open(portrait("C001082"))
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": pixels stored rotated 90 degrees counter-clockwise
    im.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    upright = engine.analyze(portrait("C001082"))[0]
    faces = engine.analyze(path)
    assert len(faces) == 1
    assert abs(faces[0].bbox.left - upright.bbox.left) < 10 and abs(faces[0].bbox.top - upright.bbox.top) < 10
    assert abs(faces[0].pose.roll) < 10
    assert _same_face(faces[0], upright) > 0.95


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_detect_other_pixel_formats(engine: facelens.Engine, tmp_path: Path, mode: str) -> None:
    im = Image.open(portrait("D000601")).convert("RGB")
    reference = engine.analyze(portrait("D000601"))[0]
    path = tmp_path / f"face_{mode.replace(';', '')}.png"
    if mode == "I;16":
        grey = np.asarray(im.convert("L")).astype(np.uint16) * 257
        Image.fromarray(grey).save(path)
        assert Image.open(path).mode.startswith("I")
    elif mode == "RGBA":
        rgba = im.convert("RGBA")
        alpha = np.full((im.height, im.width), 255, np.uint8)
        alpha[:40] = 0  # transparent band at the top
        rgba.putalpha(Image.fromarray(alpha))
        rgba.save(path)
    else:
        im.convert(mode).save(path)
    faces = engine.analyze(path)
    assert len(faces) == 1
    assert _same_face(faces[0], reference) > (0.85 if mode != "RGBA" else 0.97)


def test_decode_errors_reach_the_caller(engine: facelens.Engine, tmp_path: Path) -> None:
    data = portrait("A000368").read_bytes()
    with pytest.raises(ImageDecodeError):
        engine.detect(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError):
        engine.detect(b"")
    with pytest.raises(ImageDecodeError, match="does not exist"):
        engine.detect(tmp_path / "missing.jpg")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    eng = facelens.Engine(max_pixels=100_000)
    with pytest.raises(ImageTooLargeError) as info:
        eng.detect(portrait("A000368"))  # 450 x 550 = 247,500 pixels
    assert (info.value.width, info.value.height) == (450, 550)


def test_same_person_scores_above_different_people(engine: facelens.Engine) -> None:
    emb = {(p, w): engine.embed(portrait(p, w)) for p in PEOPLE for w in "ab"}
    for p in PEOPLE:
        genuine = float(emb[(p, "a")] @ emb[(p, "b")])
        impostor = max(float(emb[(p, w)] @ emb[(q, v)]) for q in PEOPLE if q != p for w in "ab" for v in "ab")
        assert genuine > impostor + 0.2, (p, genuine, impostor)


def test_embed_raises_no_face_error_naming_the_source(engine: facelens.Engine) -> None:
    with pytest.raises(NoFaceError, match="<array>"):
        engine.embed(np.full((200, 200, 3), 30, np.uint8))


def test_quality_filter_none_refuses_nothing(engine: facelens.Engine) -> None:
    small = cv2.resize(load_rgb(portrait("A000368")), (45, 55))
    faces = engine.detect(small, quality_filter="HIGH")
    assert faces and RefusalReason.SMALL_BOUNDING_BOX in faces[0].refusal_reasons
    assert engine.detect(small, quality_filter="NONE")[0].refusal_reasons == ()


def test_min_face_size_drops_small_faces() -> None:
    eng = facelens.Engine(min_face_size=300)
    assert eng.detect(portrait("A000368")) == []
