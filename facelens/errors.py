"""One exception tree for facelens.

Every error the library raises on purpose derives from :class:`FacelensError`, so callers (the CLI,
the HTTP service, user code) can catch one class and map it to a message or a status code in one
place. Errors carry the context a user needs to act on them (which file, which model, which limit).
"""

from __future__ import annotations

__all__ = [
    "FacelensError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "InvalidArgumentError",
    "ModelError",
    "ModelFileError",
    "NoFaceError",
    "CalibrationError",
    "UnsupportedRateError",
    "CollectionError",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "FaceNotFoundError",
    "ModelMismatchError",
    "VideoDecodeError",
]


class FacelensError(Exception):
    """Root of every error facelens raises on purpose."""


class InvalidArgumentError(FacelensError, ValueError):
    """An argument has a value the API cannot accept (a negative size, an unknown option...)."""


class ImageDecodeError(FacelensError):
    """The input could not be decoded as an image: empty, truncated, or not an image at all.

    ``source`` names where the bytes came from (a path, or ``"<bytes>"``/``"<array>"``).
    """

    def __init__(self, message: str, *, source: str = "<bytes>") -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class ImageTooLargeError(ImageDecodeError):
    """The image declares more pixels than allowed; refused before its pixels are decoded.

    This is the defence against decompression bombs: a small file that claims to be huge.
    """

    def __init__(self, *, width: int, height: int, max_pixels: int, source: str = "<bytes>") -> None:
        super().__init__(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (raise max_pixels / FACELENS_MAX_PIXELS if this is intended)",
            source=source,
        )
        self.width = width
        self.height = height
        self.max_pixels = max_pixels


class NoFaceError(FacelensError):
    """An operation that needs a face (compare, embed-one) found none in an image."""

    def __init__(self, message: str, *, source: str = "<image>") -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class ModelError(FacelensError):
    """A model could not be set up or run."""


class ModelFileError(ModelError):
    """A model file is missing, or its sha256 differs from the one facelens was built against."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class CalibrationError(FacelensError):
    """A calibration table is missing, malformed, or belongs to another model."""


class UnsupportedRateError(CalibrationError, InvalidArgumentError):
    """A false-match rate (or an FPIR at a collection size) the calibration cannot support: too few
    impostor pairs to read it, or a tail so heavy that no score keeps the bound that low. The message
    names the pairs needed or the way out (a higher rate, a smaller collection); a request error (HTTP 422,
    CLI usage), not a broken installation."""


class CollectionError(FacelensError):
    """A collection operation failed."""


class CollectionNotFoundError(CollectionError):
    """No collection of that name exists."""


class CollectionExistsError(CollectionError):
    """A collection of that name already exists."""


class FaceNotFoundError(CollectionError):
    """A face id is not in the collection."""


class ModelMismatchError(CollectionError):
    """A collection is bound to one model and refuses embeddings of another."""


class VideoDecodeError(FacelensError):
    """A video could not be opened or decoded: not a video, no video stream, corrupt, or truncated.

    ``source`` names the file or stream; ``at_s`` is the time in the video where decoding failed, when
    some frames had been decoded before it (a truncated or damaged file), else ``None``.
    """

    def __init__(self, message: str, *, source: str, at_s: float | None = None) -> None:
        where = f" at {at_s:.3f} s" if at_s is not None else ""
        super().__init__(f"{source}: {message}{where}")
        self.source = source
        self.at_s = at_s
