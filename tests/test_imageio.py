"""Tests for facelens.imageio.decode_image: every input kind, mode and failure it promises to handle.

Variants are generated in ``tmp_path`` from a real public-domain portrait, so the pixels are those
of a photo (JPEG artefacts included), not synthetic flat colours.
"""

from __future__ import annotations

import io
import os
import re
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageFile

from facelens.errors import ImageDecodeError, ImageTooLargeError, InvalidArgumentError
from facelens.imageio import DEFAULT_MAX_PIXELS, decode_image, describe_source

PORTRAITS = Path(__file__).resolve().parents[1] / "examples" / "portraits"
UPRIGHT_JPEG = PORTRAITS / "B000444_a.jpg"  # 450x550 RGB JPEG, EXIF orientation 1

# JPEG re-encoding changes pixels a little; a mean absolute difference under this is "same image".
JPEG_TOLERANCE = 8.0

# How to store an upright image so that the EXIF Orientation tag says how to undo it: the stored
# pixels are the upright ones put through the inverse of the transform the tag asks the viewer for.
STORE_FOR_ORIENTATION: dict[int, Image.Transpose | None] = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # the viewer rotates 270 (90 clockwise) to undo it
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # the viewer rotates 90 to undo it
}


def assert_rgb8(arr: np.ndarray, shape: tuple[int, int] | None = None) -> None:
    """The output contract: a C-contiguous (H, W, 3) uint8 array (of the given H, W)."""
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.uint8
    assert arr.ndim == 3 and arr.shape[2] == 3
    assert arr.flags.c_contiguous
    if shape is not None:
        assert arr.shape[:2] == shape


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def upright() -> npt.NDArray[np.uint8]:
    """The reference portrait as decoded by decode_image (checked against Pillow below)."""
    return decode_image(UPRIGHT_JPEG)


@pytest.fixture(scope="module")
def upright_img(upright: npt.NDArray[np.uint8]) -> Image.Image:
    return Image.fromarray(upright)


def craft_png_header(width: int, height: int) -> bytes:
    """A tiny, otherwise valid PNG whose IHDR declares ``width`` x ``height`` pixels."""
    buf = io.BytesIO()
    Image.new("L", (1, 1), 0).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


# --------------------------------------------------------------------------- plain decoding


def test_decode_portrait_jpeg_matches_pillow(upright: npt.NDArray[np.uint8]) -> None:
    assert_rgb8(upright, (550, 450))
    with Image.open(UPRIGHT_JPEG) as img:
        expected = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(upright, expected)


@pytest.mark.parametrize("path", sorted(PORTRAITS.glob("*.jpg")), ids=lambda p: p.name)
def test_decode_all_example_portraits(path: Path) -> None:
    arr = decode_image(path)
    with Image.open(path) as img:
        assert_rgb8(arr, (img.height, img.width))


def test_decode_str_path_and_pathlike_agree(upright: npt.NDArray[np.uint8]) -> None:
    np.testing.assert_array_equal(decode_image(str(UPRIGHT_JPEG)), upright)


def test_decode_bytes_equals_path(upright: npt.NDArray[np.uint8]) -> None:
    data = UPRIGHT_JPEG.read_bytes()
    for variant in (data, bytearray(data), memoryview(data)):
        arr = decode_image(variant)
        assert_rgb8(arr)
        np.testing.assert_array_equal(arr, upright)


def test_decode_result_is_writable_and_fresh() -> None:
    a = decode_image(UPRIGHT_JPEG)
    b = decode_image(UPRIGHT_JPEG)
    assert a.flags.writeable
    a[:] = 0
    assert b.any()


def test_decode_one_by_one_image(tmp_path: Path) -> None:
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg")):
        path = tmp_path / f"dot{suffix}"
        Image.new("RGB", (1, 1), (10, 200, 30)).save(path, fmt)
        arr = decode_image(path)
        assert_rgb8(arr, (1, 1))


# --------------------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_exif_orientation_is_applied(
    tmp_path: Path,
    upright: npt.NDArray[np.uint8],
    upright_img: Image.Image,
    orientation: int,
) -> None:
    method = STORE_FOR_ORIENTATION[orientation]
    stored = upright_img if method is None else upright_img.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"orient{orientation}.jpg"
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())

    arr = decode_image(path)
    assert_rgb8(arr, upright.shape[:2])
    assert mean_abs_diff(arr, upright) < JPEG_TOLERANCE

    # The check has teeth: the raw stored pixels are not upright (except for orientation 1).
    raw = np.asarray(stored)
    if orientation != 1 and raw.shape == upright.shape:
        assert mean_abs_diff(raw, upright) > 2 * JPEG_TOLERANCE


# --------------------------------------------------------------------------- image modes


def test_decode_greyscale_jpeg(tmp_path: Path, upright_img: Image.Image) -> None:
    grey = upright_img.convert("L")
    path = tmp_path / "grey.jpg"
    grey.save(path, "JPEG", quality=95)
    arr = decode_image(path)
    assert_rgb8(arr, (grey.height, grey.width))
    np.testing.assert_array_equal(arr[..., 0], arr[..., 1])
    np.testing.assert_array_equal(arr[..., 0], arr[..., 2])
    assert mean_abs_diff(arr[..., 0], np.asarray(grey)) < JPEG_TOLERANCE


def test_decode_rgba_png_composites_over_white(
    tmp_path: Path, upright: npt.NDArray[np.uint8]
) -> None:
    h, w = upright.shape[:2]
    alpha = np.full((h, w), 255, dtype=np.uint8)
    alpha[:, : w // 3] = 0
    alpha[:, w // 3 : 2 * w // 3] = 128
    rgba = np.dstack([upright, alpha])
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)

    arr = decode_image(path)
    assert_rgb8(arr, (h, w))
    assert (arr[:, : w // 3] == 255).all()
    np.testing.assert_array_equal(arr[:, 2 * w // 3 :], upright[:, 2 * w // 3 :])
    half = upright[:, w // 3 : 2 * w // 3].astype(np.float64)
    expected_half = np.rint((half * 128 + 255 * 127) / 255)
    assert np.abs(arr[:, w // 3 : 2 * w // 3] - expected_half).max() <= 1


def test_decode_la_png(tmp_path: Path, upright_img: Image.Image) -> None:
    grey = np.asarray(upright_img.convert("L"))
    alpha = np.full_like(grey, 255)
    alpha[:50] = 0
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(path)
    with Image.open(path) as img:
        assert img.mode == "LA"

    arr = decode_image(path)
    assert_rgb8(arr, grey.shape)
    assert (arr[:50] == 255).all()
    for c in range(3):
        np.testing.assert_array_equal(arr[50:, :, c], grey[50:])


def test_decode_palette_png_without_transparency(tmp_path: Path, upright_img: Image.Image) -> None:
    pal = upright_img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    path = tmp_path / "pal.png"
    pal.save(path)
    with Image.open(path) as img:
        assert img.mode == "P" and "transparency" not in img.info
    arr = decode_image(path)
    assert_rgb8(arr, (pal.height, pal.width))
    np.testing.assert_array_equal(arr, np.asarray(pal.convert("RGB")))


def test_decode_palette_png_with_transparent_index(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 2), 0)
    pal.putpalette([0, 0, 0, 200, 10, 20] + [0] * (254 * 3))
    pal.putpixel((1, 0), 1)
    path = tmp_path / "pal_t.png"
    pal.save(path, transparency=0)  # index 0 (black) is fully transparent
    with Image.open(path) as img:
        assert img.mode == "P" and img.info.get("transparency") == 0
    arr = decode_image(path)
    assert_rgb8(arr, (2, 4))
    assert tuple(arr[0, 1]) == (200, 10, 20)
    assert (arr[1] == 255).all() and (arr[0, 0] == 255).all()


def test_decode_palette_png_with_partial_alpha(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([0, 0, 0, 200, 10, 20] + [0] * (254 * 3))
    pal.putpixel((1, 0), 1)
    path = tmp_path / "pal_a.png"
    pal.save(path, transparency=bytes([255, 128]))  # index 1 is half transparent
    arr = decode_image(path)
    assert tuple(arr[0, 0]) == (0, 0, 0)
    expected = [round((v * 128 + 255 * 127) / 255) for v in (200, 10, 20)]
    assert np.abs(arr[0, 1].astype(int) - expected).max() <= 1


def test_decode_gif_with_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (3, 1), 0)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    pal.putpixel((2, 0), 1)
    path = tmp_path / "t.gif"
    pal.save(path, transparency=0)
    arr = decode_image(path)
    assert_rgb8(arr, (1, 3))
    assert (arr[0, :2] == 255).all()
    assert tuple(arr[0, 2]) == (0, 0, 255)


def test_decode_16bit_greyscale_png(tmp_path: Path) -> None:
    values = np.array([[0, 65535, 32896, 257], [128, 129, 1000, 65534]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # 'I;16' in current Pillow, 'I' in older ones
    arr = decode_image(path)
    assert_rgb8(arr, (2, 4))
    expected = np.array([[0, 255, 128, 1], [0, 1, 4, 255]], dtype=np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(arr[..., c], expected)


def test_decode_32bit_integer_and_float_tiffs_scale_from_their_range(tmp_path: Path) -> None:
    ints = np.array([[0, 500_000, 1_000_000]], dtype=np.int32)
    path = tmp_path / "i32.tif"
    Image.fromarray(ints, "I").save(path)
    arr = decode_image(path)
    assert_rgb8(arr, (1, 3))
    assert arr[0, :, 0].tolist() == [0, 128, 255]

    small = np.array([[0, 100, 255]], dtype=np.int32)
    Image.fromarray(small, "I").save(path)
    assert decode_image(path)[0, :, 0].tolist() == [0, 100, 255]  # already 8-bit range

    floats = np.array([[-1.0, 0.0, 1000.0]], dtype=np.float32)
    fpath = tmp_path / "f32.tif"
    Image.fromarray(floats, "F").save(fpath)
    farr = decode_image(fpath)
    assert_rgb8(farr, (1, 3))
    assert farr[0, :, 0].tolist() == [0, 0, 255]


def test_decode_48bit_rgb_png(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    rgb16 = np.array([[[65535, 0, 32896], [257, 51400, 1000]]], dtype=np.uint16)
    path = tmp_path / "rgb48.png"
    assert cv2.imwrite(str(path), rgb16[..., ::-1])  # OpenCV writes BGR
    arr = decode_image(path)
    assert_rgb8(arr, (1, 2))
    # Pillow itself reduces 16-bit RGB to 8 bits (keeping the high byte): within 1 of v / 257.
    assert np.abs(arr.astype(int) - rgb16 / 257).max() <= 1


def test_decode_cmyk_jpeg(tmp_path: Path, upright: npt.NDArray[np.uint8], upright_img: Image.Image) -> None:
    path = tmp_path / "cmyk.jpg"
    upright_img.convert("CMYK").save(path, "JPEG", quality=95)
    with Image.open(path) as img:
        assert img.mode == "CMYK"
    arr = decode_image(path)
    assert_rgb8(arr, upright.shape[:2])
    assert mean_abs_diff(arr, upright) < JPEG_TOLERANCE


def test_decode_one_bit_png(tmp_path: Path, upright_img: Image.Image) -> None:
    bw = upright_img.convert("1")
    path = tmp_path / "bw.png"
    bw.save(path)
    arr = decode_image(path)
    assert_rgb8(arr, (bw.height, bw.width))
    assert set(np.unique(arr).tolist()) == {0, 255}
    np.testing.assert_array_equal(arr, np.asarray(bw.convert("RGB")))


@pytest.mark.parametrize("mode", ["YCbCr", "LAB"])
def test_decode_other_colour_spaces_via_tiff(
    tmp_path: Path, upright_img: Image.Image, mode: str
) -> None:
    small = upright_img.resize((45, 55))
    converted = small.convert(mode)
    path = tmp_path / f"{mode}.tif"
    try:
        converted.save(path)
    except (OSError, ValueError, KeyError):
        pytest.skip(f"this Pillow cannot write {mode} TIFFs")
    with Image.open(path) as img:
        expected = np.asarray(img.convert("RGB"))
    arr = decode_image(path)
    assert_rgb8(arr, (55, 45))
    np.testing.assert_array_equal(arr, expected)


# --------------------------------------------------------------------------- numpy input


def test_decode_array_rgb_uint8_is_copied(upright: npt.NDArray[np.uint8]) -> None:
    src = upright.copy()
    arr = decode_image(src)
    assert_rgb8(arr, upright.shape[:2])
    np.testing.assert_array_equal(arr, upright)
    assert arr is not src and not np.shares_memory(arr, src)
    arr[:] = 0
    np.testing.assert_array_equal(src, upright)


def test_decode_array_non_contiguous_views(upright: npt.NDArray[np.uint8]) -> None:
    flipped = upright[:, ::-1]
    assert not flipped.flags.c_contiguous
    arr = decode_image(flipped)
    assert_rgb8(arr)
    np.testing.assert_array_equal(arr, flipped)
    fortran = np.asfortranarray(upright)
    assert_rgb8(decode_image(fortran))
    np.testing.assert_array_equal(decode_image(fortran), upright)


def test_decode_array_grey_2d_and_single_channel() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    for src in (grey, grey[:, :, np.newaxis]):
        arr = decode_image(src)
        assert_rgb8(arr, (3, 4))
        for c in range(3):
            np.testing.assert_array_equal(arr[..., c], grey)


def test_decode_array_rgba_composites_over_white() -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    rgba[0, 1] = (10, 20, 30, 0)
    rgba[1, 0] = (0, 0, 0, 128)
    rgba[1, 1] = (200, 100, 50, 51)
    src = rgba.copy()
    arr = decode_image(src)
    assert_rgb8(arr, (2, 2))
    assert tuple(arr[0, 0]) == (10, 20, 30)
    assert tuple(arr[0, 1]) == (255, 255, 255)
    assert tuple(arr[1, 0]) == (127, 127, 127)
    assert tuple(arr[1, 1]) == (
        round((200 * 51 + 255 * 204) / 255),
        round((100 * 51 + 255 * 204) / 255),
        round((50 * 51 + 255 * 204) / 255),
    )
    np.testing.assert_array_equal(src, rgba)  # caller's array untouched


def test_decode_array_uint16_scaled() -> None:
    src = np.array([[0, 65535], [32896, 129]], dtype=np.uint16)
    arr = decode_image(src)
    assert_rgb8(arr, (2, 2))
    assert arr[..., 0].tolist() == [[0, 255], [128, 1]]
    rgb = np.stack([src, src, src], axis=-1)
    np.testing.assert_array_equal(decode_image(rgb), arr)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_decode_array_float_unit_range(dtype: type[np.floating]) -> None:
    src = np.array([[0.0, 1.0], [0.5, 0.25]], dtype=dtype)
    arr = decode_image(src)
    assert_rgb8(arr, (2, 2))
    assert arr[..., 0].tolist() == [[0, 255], [128, 64]]


def test_decode_array_bool() -> None:
    src = np.array([[True, False, True]])
    arr = decode_image(src)
    assert_rgb8(arr, (1, 3))
    assert arr[0, :, 1].tolist() == [255, 0, 255]


@pytest.mark.parametrize(
    "bad",
    [
        np.array([[0.0, 1.5]]),
        np.array([[-0.1, 0.5]], dtype=np.float32),
        np.array([[np.nan, 0.5]]),
        np.array([[np.inf, 0.5]]),
    ],
    ids=["over-one", "negative", "nan", "inf"],
)
def test_decode_array_float_out_of_range_rejected(bad: np.ndarray) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(bad)
    assert info.value.source == "<array>"
    assert type(info.value) is ImageDecodeError


@pytest.mark.parametrize(
    "dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64, np.complex64, object]
)
def test_decode_array_bad_dtype_rejected(dtype: type) -> None:
    with pytest.raises(ImageDecodeError, match="dtype"):
        decode_image(np.zeros((4, 4, 3), dtype=dtype))


@pytest.mark.parametrize(
    "shape", [(4,), (4, 4, 2), (4, 4, 5), (2, 4, 4, 3), ()], ids=str
)
def test_decode_array_bad_shape_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageDecodeError, match="shape"):
        decode_image(np.zeros(shape, dtype=np.uint8))


@pytest.mark.parametrize("shape", [(0, 4), (4, 0, 3), (0, 0, 3)], ids=str)
def test_decode_array_empty_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(np.zeros(shape, dtype=np.uint8))


def test_decode_array_over_max_pixels() -> None:
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(np.zeros((10, 20, 3), dtype=np.uint8), max_pixels=199)
    assert (info.value.width, info.value.height, info.value.max_pixels) == (20, 10, 199)
    assert info.value.source == "<array>"
    assert_rgb8(decode_image(np.zeros((10, 20, 3), dtype=np.uint8), max_pixels=200), (10, 20))


# --------------------------------------------------------------------------- failures


def test_decode_truncated_jpeg(tmp_path: Path) -> None:
    data = UPRIGHT_JPEG.read_bytes()
    half = data[: len(data) // 2]
    with pytest.raises(ImageDecodeError) as info:
        decode_image(half)
    assert type(info.value) is ImageDecodeError
    assert info.value.source == "<bytes>"
    path = tmp_path / "half.jpg"
    path.write_bytes(half)
    with pytest.raises(ImageDecodeError) as pinfo:
        decode_image(path)
    assert pinfo.value.source == str(path)


def test_decode_truncated_png(tmp_path: Path, upright_img: Image.Image) -> None:
    buf = io.BytesIO()
    upright_img.save(buf, "PNG")
    data = buf.getvalue()
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2])


def test_decode_truncated_images_are_not_silently_accepted() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # facelens must never flip this global


def test_decode_empty_bytes_and_empty_file(tmp_path: Path) -> None:
    for empty in (b"", bytearray(), memoryview(b"")):
        with pytest.raises(ImageDecodeError, match="0 bytes"):
            decode_image(empty)
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty") as info:
        decode_image(path)
    assert info.value.source == str(path)


def test_decode_random_bytes() -> None:
    junk = np.random.default_rng(1234).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(junk)
    with pytest.raises(ImageDecodeError):
        decode_image(b"hello, world")


def test_decode_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageDecodeError, match="does not exist") as info:
        decode_image(missing)
    assert info.value.source == str(missing)
    with pytest.raises(ImageDecodeError, match="does not exist"):
        decode_image(str(missing))
    with pytest.raises(ImageDecodeError):
        decode_image("")


def test_decode_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="directory") as info:
        decode_image(tmp_path)
    assert info.value.source == str(tmp_path)


def test_decode_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes; decode must refuse it before opening."""
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="FIFO") as info:
        decode_image(fifo)
    assert time.perf_counter() - t0 < 5
    assert info.value.source == str(fifo) and "not a regular image file" in str(info.value)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_decode_character_device_is_refused() -> None:
    """/dev/zero never ends and /dev/null is empty: both are devices, refused by what they are."""
    for dev in ("/dev/zero", "/dev/null"):
        with pytest.raises(ImageDecodeError, match="character device") as info:
            decode_image(dev)
        assert info.value.source == dev


def test_decode_symlink_to_an_image_is_read(tmp_path: Path, upright: npt.NDArray[np.uint8]) -> None:
    link = tmp_path / "link.jpg"
    link.symlink_to(UPRIGHT_JPEG)
    assert np.array_equal(decode_image(link), upright)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_decode_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.jpg"
    path.write_bytes(UPRIGHT_JPEG.read_bytes())
    path.chmod(0)
    with pytest.raises(ImageDecodeError, match="cannot read file: Permission denied") as info:
        decode_image(path)
    assert info.value.source == str(path)


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}|object at|<_io\.")


def _garbage_inputs() -> dict[str, bytes]:
    jpeg = UPRIGHT_JPEG.read_bytes()
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(png, "PNG")
    gif = io.BytesIO()
    Image.new("P", (64, 64)).save(gif, "GIF")
    rng = np.random.default_rng(7)
    return {
        "random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "text": b"hello, world",
        "one byte": b"\x00",
        "truncated jpeg": jpeg[: len(jpeg) // 3],
        "jpeg header only": jpeg[:200],
        "jpeg with garbage body": jpeg[:600] + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "truncated png": png.getvalue()[:60],
        "png signature only": png.getvalue()[:8],
        "truncated gif": gif.getvalue()[:20],
        "bmp header only": b"BM" + b"\x00" * 30,
        "tiff header only": b"II*\x00" + b"\xff" * 12,
        "webp header only": b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8,
    }


@pytest.mark.parametrize("name", list(_garbage_inputs()))
def test_decode_error_messages_hold_no_object_repr_or_address(name: str, tmp_path: Path) -> None:
    """Pillow says "cannot identify image file <_io.BytesIO object at 0x7f...>"; clients must not see that."""
    data = _garbage_inputs()[name]
    path = tmp_path / "bad.img"
    path.write_bytes(data)
    for source in (data, bytearray(data), path):
        with pytest.raises(ImageDecodeError) as info, warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's warnings about the corrupt data must not escape either
            decode_image(source)
        message = str(info.value)
        assert not _ADDRESS.search(message), message
        assert message.startswith(str(path) if isinstance(source, Path) else "<bytes>")


def test_decode_eps_refused(tmp_path: Path) -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"
    with pytest.raises(ImageDecodeError):
        decode_image(eps)


def test_decode_unsupported_input_type() -> None:
    with pytest.raises(InvalidArgumentError):
        decode_image(12345)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        decode_image(Image.new("RGB", (2, 2)))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "100"])
def test_decode_invalid_max_pixels(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        decode_image(np.zeros((2, 2, 3), dtype=np.uint8), max_pixels=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        decode_image(UPRIGHT_JPEG, max_pixels=bad)  # type: ignore[arg-type]


def test_decode_too_large_is_a_decode_error() -> None:
    assert issubclass(ImageTooLargeError, ImageDecodeError)
    assert DEFAULT_MAX_PIXELS == 40_000_000


# --------------------------------------------------------------------------- decompression bombs


def test_decode_small_max_pixels_on_normal_image() -> None:
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(UPRIGHT_JPEG, max_pixels=450 * 550 - 1)
    err = info.value
    assert (err.width, err.height, err.max_pixels) == (450, 550, 450 * 550 - 1)
    assert err.source == str(UPRIGHT_JPEG)
    assert_rgb8(decode_image(UPRIGHT_JPEG, max_pixels=450 * 550), (550, 450))


@pytest.mark.parametrize(
    "side",
    [
        7_000,  # 49 Mpx: over our default limit, under Pillow's warning threshold (~89 Mpx)
        10_000,  # 100 Mpx: Pillow would warn (DecompressionBombWarning)
        30_000,  # 900 Mpx: Pillow would raise DecompressionBombError at open
    ],
)
def test_decode_decompression_bomb_refused_from_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    bomb = craft_png_header(side, side)
    assert len(bomb) < 200
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for source in (bomb, path):
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # no DecompressionBombWarning may escape
            with pytest.raises(ImageTooLargeError) as info:
                decode_image(source)
        assert time.perf_counter() - start < 1.0
        assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
        err = info.value
        assert (err.width, err.height) == (side, side)
        assert err.max_pixels == DEFAULT_MAX_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # as under ``python -W error``: same error type
            with pytest.raises(ImageTooLargeError):
                decode_image(source)


def test_decode_bomb_over_pillow_hard_limit_even_if_max_pixels_allows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if Image.MAX_IMAGE_PIXELS is None:
        pytest.skip("Pillow's decompression-bomb check is disabled in this process")
    side = 30_000
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(craft_png_header(side, side), max_pixels=side * side)
    err = info.value
    assert (err.width, err.height) == (side, side)
    assert err.max_pixels == 2 * Image.MAX_IMAGE_PIXELS
    assert "MAX_IMAGE_PIXELS" in caplog.text


def test_decode_pillow_globals_untouched() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLargeError):
        decode_image(craft_png_header(30_000, 30_000))
    assert Image.MAX_IMAGE_PIXELS == before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --------------------------------------------------------------------------- describe_source


def test_decode_describe_source_labels(tmp_path: Path) -> None:
    assert describe_source(tmp_path / "a.jpg") == str(tmp_path / "a.jpg")
    assert describe_source("x/y.png") == "x/y.png"
    assert describe_source(b"abc") == "<bytes>"
    assert describe_source(bytearray(b"abc")) == "<bytes>"
    assert describe_source(memoryview(b"abc")) == "<bytes>"
    assert describe_source(np.zeros((1, 1), dtype=np.uint8)) == "<array>"
