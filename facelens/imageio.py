"""Turn whatever a caller hands us (a path, encoded bytes, a numpy array) into one pixel format.

Every other part of facelens works on a C-contiguous ``(H, W, 3)`` ``uint8`` array in RGB order,
upright (EXIF orientation applied), with any transparency composited over white. This module is
the only place that knows about files, codecs, image modes and bit depths.

It is also the first line of defence against hostile input: an encoded image whose header
declares more than ``max_pixels`` pixels is refused with :class:`~facelens.errors.ImageTooLargeError`
before any pixel is decoded (a tiny file can claim to be 30000x30000 and would otherwise cost
gigabytes of memory), and truncated or corrupt data is refused with
:class:`~facelens.errors.ImageDecodeError` instead of being padded with grey.

Numpy arrays are taken as **RGB** (or RGBA). OpenCV users must convert first:
``cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)``; a BGR array is accepted silently and gives worse
results, because nothing in the array says which order its channels are in.
"""

from __future__ import annotations

import io
import logging
import operator
import os
import re
import stat
import struct
import warnings
from typing import IO, Any, Union

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from facelens.errors import ImageDecodeError, ImageTooLargeError, InvalidArgumentError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageInput", "check_image_file", "decode_image", "describe_source"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS: int = 40_000_000
"""Largest image (width * height) :func:`decode_image` accepts unless told otherwise.

40 megapixels covers every phone and most DSLR photos; decoded to RGB it is 120 MB.
"""

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "npt.NDArray[Any]"]
"""What :func:`decode_image` accepts: a filesystem path, the encoded bytes of an image file
(JPEG, PNG, WebP, ...), or an already-decoded numpy array in RGB(A) channel order."""

_EXIF_ORIENTATION = 0x0112

# Formats Pillow can identify that we refuse to decode: reading EPS runs Ghostscript, an external
# interpreter, on the file's contents. A face photo is never PostScript.
_REFUSED_FORMATS = frozenset({"EPS"})

# Exceptions Pillow's plugins raise on corrupt, truncated or unsupported data. (MemoryError and
# KeyboardInterrupt are deliberately absent: those are not properties of the input.)
_DECODE_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    ZeroDivisionError,
    struct.error,
)

_PROBE_FAILURES: tuple[type[BaseException], ...] = (*_DECODE_FAILURES, Image.DecompressionBombError)

_BOMB_PIXELS_RE = re.compile(r"\((\d+) pixels\)")


def describe_source(image: ImageInput) -> str:
    """Return the label errors use for ``image``: the path as a string, ``"<bytes>"`` for encoded
    bytes, ``"<array>"`` for a numpy array (``"<TypeName>"`` for anything else)."""
    if isinstance(image, np.ndarray):
        return "<array>"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(image, (str, os.PathLike)):
        return os.fsdecode(image)
    return f"<{type(image).__name__}>"


def decode_image(image: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``image`` into a new C-contiguous ``(H, W, 3)`` ``uint8`` RGB array, upright.

    ``image`` may be:

    * a path (``str`` or ``os.PathLike``) or the encoded bytes (``bytes``, ``bytearray``,
      ``memoryview``) of any still-image format Pillow reads (the first frame of an animation).
      The EXIF orientation tag is applied, so the result is the way a photo viewer shows it.
      Grey, palette, 1-bit, CMYK, YCbCr, LAB and HSV images are converted to RGB; 16-bit images
      are scaled to 8 bits (``round(v / 257)``); 32-bit integer and float images are scaled from
      their actual range when it exceeds 0..255; transparency is composited over white.
    * a numpy array, **taken as RGB** (convert OpenCV's BGR first): ``(H, W)`` or ``(H, W, 1)``
      grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (composited over white), of dtype ``uint8``
      (as is), ``uint16`` (scaled by 1/257), ``bool`` (0/255) or float with values in [0, 1]
      (scaled by 255). The result never shares memory with the caller's array.

    ``max_pixels`` bounds ``width * height``; for encoded input it is checked against the file's
    header before any pixel is decoded.

    Raises:
        ImageTooLargeError: the image has more than ``max_pixels`` pixels (or more than Pillow's
            process-wide ``PIL.Image.MAX_IMAGE_PIXELS`` hard limit, which facelens does not touch).
        ImageDecodeError: the input is empty, truncated, corrupt, not an image, a missing or
            unreadable file, a directory, anything else that is not a regular file (a FIFO, a device
            such as ``/dev/zero``: refused before it is opened, so it cannot block or run forever), or
            an array of a shape or dtype listed as unsupported above. Its message never holds an
            object's repr or a memory address.
        InvalidArgumentError: ``max_pixels`` is not a positive integer, or ``image`` is of a type
            not listed above.

    Truncated data is refused as long as ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is left at its
    default (``False``); facelens never sets it, but other code in the process could.
    """
    limit = _check_max_pixels(max_pixels)
    source = describe_source(image)
    if isinstance(image, np.ndarray):
        return _from_array(image, max_pixels=limit, source=source)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = image if isinstance(image, bytes) else bytes(image)
        if not data:
            raise ImageDecodeError("no data (0 bytes)", source=source)
        return _decode_stream(io.BytesIO(data), max_pixels=limit, source=source)
    if isinstance(image, (str, os.PathLike)):
        return _decode_path(source, max_pixels=limit)
    raise InvalidArgumentError(
        f"cannot decode an image from a {type(image).__name__}: pass a path, the encoded bytes "
        "of an image file, or a numpy array in RGB order"
    )


def _check_max_pixels(max_pixels: int) -> int:
    """Return ``max_pixels`` as an int, or raise InvalidArgumentError unless it is a positive
    integer (bools are refused: ``max_pixels=True`` is a bug, not a limit of 1)."""
    if isinstance(max_pixels, bool):
        raise InvalidArgumentError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    try:
        limit = operator.index(max_pixels)
    except TypeError:
        raise InvalidArgumentError(
            f"max_pixels must be a positive integer, got {max_pixels!r}"
        ) from None
    if limit <= 0:
        raise InvalidArgumentError(f"max_pixels must be a positive integer, got {limit}")
    return limit


# --------------------------------------------------------------------------- encoded input


def check_image_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`~facelens.errors.ImageDecodeError` unless ``path`` names an existing regular file.

    Call it before opening a path given by a user: opening a FIFO blocks until someone writes to it,
    and a device such as ``/dev/zero`` never ends, so both are refused by what they are, as are
    directories and missing files. Symbolic links are followed. :func:`decode_image` does this itself.
    """
    source = os.fsdecode(path)
    if not source:
        raise ImageDecodeError("empty path", source="''")
    try:
        mode = os.stat(source).st_mode
    except FileNotFoundError:
        raise ImageDecodeError("file does not exist", source=source) from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}", source=source) from None
    if stat.S_ISDIR(mode):
        raise ImageDecodeError("is a directory, not an image file", source=source)
    if not stat.S_ISREG(mode):
        raise ImageDecodeError(f"is {_file_kind(mode)}, not a regular image file", source=source)


def _decode_path(path: str, *, max_pixels: int) -> np.ndarray:
    """Decode the image file at ``path`` (also the error source label)."""
    check_image_file(path)
    try:
        with open(path, "rb") as fp:
            if not fp.read(1):
                raise ImageDecodeError("file is empty (0 bytes)", source=path)
            fp.seek(0)
            return _decode_stream(fp, max_pixels=max_pixels, source=path)
    except OSError as exc:
        # Opening or reading the file itself failed (permissions, I/O error...).
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}", source=path) from exc


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for error messages ("a FIFO (named pipe)", ...)."""
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((words for test, words in kinds if test(mode)), "not a regular file")


def _decode_stream(fp: IO[bytes], *, max_pixels: int, source: str) -> np.ndarray:
    """Identify, size-check, decode and normalise the encoded image in ``fp``.

    ``fp`` stays owned by the caller; Pillow never closes a file object it was handed.
    """
    with warnings.catch_warnings():
        # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that. Our own limit decides;
        # its warning must not leak to users (or become an error under ``-W error``).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # Pillow also warns about corrupt metadata ("Corrupt EXIF data", TIFF tags); the image is then
        # either decoded or refused with ImageDecodeError, so the warning is only noise on a user's
        # terminal (or, under ``-W error``, a traceback).
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        try:
            img = Image.open(fp)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large_from_pillow(fp, exc, max_pixels=max_pixels, source=source) from exc
        except _DECODE_FAILURES as exc:
            raise ImageDecodeError(f"not a readable image ({_reason(exc)})", source=source) from exc

        with img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    width=width, height=height, max_pixels=max_pixels, source=source
                )
            if img.format in _REFUSED_FORMATS:
                raise ImageDecodeError(f"{img.format} images are not supported", source=source)
            logger.debug(
                "decoding %s: %s %s %dx%d", source, img.format, img.mode, width, height
            )
            try:
                img.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageDecodeError(
                    f"refused by Pillow as a possible decompression bomb ({exc})", source=source
                ) from exc
            except _DECODE_FAILURES as exc:
                raise ImageDecodeError(
                    f"corrupt or truncated image data ({_reason(exc)})", source=source
                ) from exc
            # A few formats (ICO, ICNS) settle on their size only when loading.
            if img.size[0] * img.size[1] > max_pixels:
                raise ImageTooLargeError(
                    width=img.size[0], height=img.size[1], max_pixels=max_pixels, source=source
                )
            upright = _apply_exif_orientation(img, source=source)
            return _to_rgb_array(upright, source=source)


# Object representations Pillow puts in its messages ("cannot identify image file <_io.BytesIO object at
# 0x7f...>"): they tell a client nothing about the image and leak the server's memory layout.
_OBJECT_REPR_RE = re.compile(r"<[^<>]*(?:\bat 0x[0-9a-fA-F]+|\bname=[^<>]*)>")
_ADDRESS_RE = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")


def _reason(exc: BaseException) -> str:
    """A short human description of a Pillow exception, for error messages.

    Never contains an object's repr or a memory address: this text reaches HTTP clients.
    """
    if isinstance(exc, UnidentifiedImageError):
        return "unknown or unsupported image format"
    text = _ADDRESS_RE.sub("(address)", _OBJECT_REPR_RE.sub("the data", str(exc))).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _too_large_from_pillow(
    fp: IO[bytes], exc: Exception, *, max_pixels: int, source: str
) -> ImageTooLargeError:
    """Translate Pillow's own decompression-bomb refusal at open time into ImageTooLargeError.

    Pillow discards the image object when it refuses, so the header is identified again here
    with Pillow's format plugins, skipping only the size check, to report the real width and
    height. If the image is within ``max_pixels`` it was Pillow's process-wide limit
    (``2 * PIL.Image.MAX_IMAGE_PIXELS``) that applied, and that is the limit reported.
    """
    size = _probe_size(fp)
    if size is None:
        # Could not re-read the header: fall back to the pixel count in Pillow's message, as a
        # (pixels x 1) size so that width * height stays the true count.
        match = _BOMB_PIXELS_RE.search(str(exc))
        size = (int(match.group(1)), 1) if match else (0, 0)
    width, height = size
    limit = max_pixels
    pillow_max = Image.MAX_IMAGE_PIXELS
    if width * height <= max_pixels and pillow_max is not None:
        limit = 2 * pillow_max
        logger.warning(
            "%s: %dx%d image is within max_pixels=%d but over Pillow's process-wide limit of %d "
            "pixels (2 * PIL.Image.MAX_IMAGE_PIXELS); raise PIL.Image.MAX_IMAGE_PIXELS to decode it",
            source, width, height, max_pixels, limit,
        )
    return ImageTooLargeError(width=width, height=height, max_pixels=limit, source=source)


def _probe_size(fp: IO[bytes]) -> tuple[int, int] | None:
    """Return the (width, height) the header in ``fp`` declares, without Pillow's size check.

    Mirrors what ``PIL.Image.open`` does to identify a file (ask each registered plugin whether
    it accepts the first 16 bytes, then parse the header with the first that does), using the
    plugin registry Pillow exposes for ``Image.register_open``. No pixel data is read.
    """
    try:
        fp.seek(0)
        prefix = fp.read(16)
        for fmt in list(Image.ID):
            entry = Image.OPEN.get(fmt)
            if entry is None:
                continue
            factory, accept = entry
            accepted = True if accept is None else accept(prefix)
            if accepted is not True:  # False, or a str explaining why not
                continue
            fp.seek(0)
            try:
                probed = factory(fp, "")
            except _PROBE_FAILURES:
                continue
            return (int(probed.size[0]), int(probed.size[1]))
    except _DECODE_FAILURES:
        logger.debug("could not re-read an image header", exc_info=True)
    return None


def _apply_exif_orientation(img: Image.Image, *, source: str) -> Image.Image:
    """Return ``img`` turned upright according to its EXIF (or XMP) orientation tag.

    A corrupt EXIF block does not make the pixels unusable: it is logged and ignored.
    """
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except _DECODE_FAILURES:
        logger.warning("%s: unreadable EXIF metadata ignored", source, exc_info=True)
        return img
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        if orientation != 1:
            logger.debug("%s: ignoring invalid EXIF orientation %r", source, orientation)
        return img
    try:
        return ImageOps.exif_transpose(img)
    except _DECODE_FAILURES:
        # Pillow re-serialises the whole EXIF block after turning the pixels, and a corrupt value in
        # another tag makes that fail (found by benchmarks/fuzz_decode.py): turn the pixels ourselves
        logger.warning("%s: corrupt EXIF metadata; applied orientation %d without it", source, orientation,
                       exc_info=True)
        return img.transpose(_TRANSPOSE[orientation])


# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose does)
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def _to_rgb_array(img: Image.Image, *, source: str) -> np.ndarray:
    """Convert a loaded Pillow image of any mode to a new ``(H, W, 3)`` uint8 RGB array."""
    mode = img.mode
    if mode == "RGB":
        return np.array(img, dtype=np.uint8, order="C")
    if mode in ("I", "F") or mode.startswith("I;"):
        # High bit-depth single channel: Pillow's convert() would clip at 255, so scale here.
        return _grey_to_rgb(_scale_to_uint8(np.array(img), source=source))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    target = "RGBA" if has_alpha else "RGB"
    try:
        converted = img.convert(target)
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(
            f"unsupported image mode {mode!r} ({_reason(exc)})", source=source
        ) from exc
    arr = np.array(converted, dtype=np.uint8, order="C")
    return _composite_over_white(arr) if has_alpha else arr


def _scale_to_uint8(values: npt.NDArray[np.generic], *, source: str) -> npt.NDArray[np.uint8]:
    """Scale one channel of high bit-depth pixel values to uint8.

    16-bit unsigned data maps 0..65535 to 0..255 (``round(v / 257)``). Other integer or float
    data is kept as is when it lies in 0..255, treated as 16-bit when integer and within
    0..65535, and otherwise stretched linearly from ``min(0, lowest)..highest`` to 0..255.
    """
    if values.dtype.kind == "u" and values.dtype.itemsize == 2:
        return _uint16_to_uint8(values.astype(np.uint16, copy=False))
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ImageDecodeError("floating-point image contains NaN or infinite values", source=source)
    if values.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    lo = float(values.min())
    hi = float(values.max())
    if lo >= 0 and hi <= 255:
        return np.rint(values.astype(np.float64)).astype(np.uint8)
    if values.dtype.kind in "iu" and lo >= 0 and hi <= 65535:
        return _uint16_to_uint8(values.astype(np.uint16))
    floor = min(0.0, lo)
    scaled = (values.astype(np.float64) - floor) * (255.0 / (hi - floor))
    return np.rint(scaled).astype(np.uint8)


def _uint16_to_uint8(values: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint8]:
    """Map 0..65535 onto 0..255 with rounding: ``(v + 128) // 257`` equals ``round(v / 257)``."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _grey_to_rgb(grey: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Repeat an ``(H, W)`` grey channel into a new C-contiguous ``(H, W, 3)`` array."""
    return np.ascontiguousarray(np.repeat(grey[:, :, np.newaxis], 3, axis=2))


def _composite_over_white(rgba: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Composite an ``(H, W, 4)`` RGBA uint8 array over white, rounding; returns ``(H, W, 3)``.

    ``out = (rgb * a + 255 * (255 - a)) / 255``; the numerator never exceeds 65025, so uint16
    arithmetic is exact.
    """
    rgb = rgba[:, :, :3].astype(np.uint16)
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return np.ascontiguousarray(out.astype(np.uint8))


# --------------------------------------------------------------------------- numpy input


def _from_array(arr: np.ndarray, *, max_pixels: int, source: str) -> np.ndarray:
    """Validate and normalise a caller's RGB(A)/grey numpy array; never aliases ``arr``."""
    if arr.ndim == 2:
        channels = 1
    elif arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        channels = arr.shape[2]
    else:
        raise ImageDecodeError(
            f"unsupported array shape {arr.shape}: expected (H, W) or (H, W, C) with C in "
            "1 (grey), 3 (RGB) or 4 (RGBA)",
            source=source,
        )
    height, width = int(arr.shape[0]), int(arr.shape[1])
    if arr.size == 0:
        raise ImageDecodeError(f"array is empty (shape {arr.shape})", source=source)
    if width * height > max_pixels:
        raise ImageTooLargeError(width=width, height=height, max_pixels=max_pixels, source=source)

    pixels = _array_to_uint8(np.asarray(arr), source=source)
    if channels == 1:
        return _grey_to_rgb(pixels.reshape(height, width))
    if channels == 4:
        return _composite_over_white(pixels)
    # np.array copies even when pixels is already the caller's uint8 array.
    return np.array(pixels, dtype=np.uint8, order="C", copy=True)


def _array_to_uint8(arr: np.ndarray, *, source: str) -> npt.NDArray[np.uint8]:
    """Convert an accepted array dtype to uint8 values (may return ``arr`` itself if uint8)."""
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return arr
    if kind == "b":
        flags: npt.NDArray[np.uint8] = arr.astype(np.uint8)
        flags *= 255
        return flags
    if arr.dtype == np.uint16:
        return _uint16_to_uint8(arr)
    if kind == "f":
        if not np.isfinite(arr).all():
            raise ImageDecodeError("float array contains NaN or infinite values", source=source)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageDecodeError(
                f"float array values must lie in [0, 1], got [{lo:g}, {hi:g}] "
                "(divide by 255 if the values are 0..255)",
                source=source,
            )
        return np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
    raise ImageDecodeError(
        f"unsupported array dtype {arr.dtype}: expected uint8, uint16, bool or float in [0, 1] "
        "(for 0..255 integers use arr.astype(np.uint8))",
        source=source,
    )
