"""What one worker computes for one image, away from the collection: decode -> detect -> quality -> align ->
embed, by the engine's own :class:`~facelens.pipeline.Pipeline`, and nothing that needs the store.

The decisions that need the collection (already indexed?, the person's match check, the policy's crops,
the write and its record) are left to :meth:`facelens.Engine.index_embedded`, run by a single writer.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from ..accountability.review import crop_of
from ..errors import FacelensError, ImageDecodeError, ImageTooLargeError
from ..imageio import decode_image
from ..pipeline import Pipeline
from ..types import Face, QualityFilter

__all__ = ["EmbeddedImage", "ImageFailure", "embed_image"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmbeddedImage:
    """The faces of one image as :meth:`facelens.Engine.index_faces` finds them, ready to be committed.

    ``source``: the path or URI the image was read from (reported, never stored); ``external_image_id``: the
    id to store it under (None: none); ``image_sha256``: sha256 of the bytes read; ``model_sha256``: the
    recogniser that embedded the faces (the collection refuses another); ``faces``: every face examined,
    largest first, each with its ``refusal_reasons``; only the faces that may be stored carry an embedding
    ((d,) float32, unit length); ``faces_over_limit``: faces beyond ``max_faces_per_image``, not examined;
    ``crops``: a JPEG of each embedded face (None for the others, or when crops were not asked for), in the
    order of ``faces``.
    """

    source: str
    external_image_id: str | None
    image_sha256: str
    model_sha256: str
    faces: tuple[Face, ...]
    faces_over_limit: int = 0
    crops: tuple[bytes | None, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class ImageFailure:
    """An image that could not be examined: ``error_type`` (the exception's class name, e.g.
    ``ImageDecodeError``) and ``message`` say why; nothing of it was stored."""

    source: str
    external_image_id: str | None
    error_type: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.error_type, "message": self.message}


def embed_image(pipeline: Pipeline, data: bytes, *, source: str, external_image_id: str | None,
                model_sha256: str, quality_filter: QualityFilter | None = None, embed_limit: int | None = None,
                crops: bool = False) -> EmbeddedImage:
    """Examine one image's encoded bytes as :meth:`facelens.Engine.index_faces` does: decode (size limit
    ``pipeline.config.max_pixels``), detect, assess, and embed the first ``embed_limit`` acceptable faces
    (default ``max_faces_per_image``; 1 when indexing the largest face for a person). ``crops``: also cut a
    JPEG of each embedded face (the collection's policy keeps them for reviewers). Raises
    :class:`~facelens.errors.ImageDecodeError` for bytes that are not a usable image."""
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        raise ImageDecodeError("file is empty (0 bytes)", source=source)
    try:
        rgb = decode_image(data, max_pixels=pipeline.config.max_pixels)
    except ImageTooLargeError as exc:  # name the file, not "<bytes>"
        raise ImageTooLargeError(width=exc.width, height=exc.height, max_pixels=exc.max_pixels,
                                 source=source) from None
    except ImageDecodeError as exc:
        raise ImageDecodeError(str(exc).removeprefix(f"{exc.source}: "), source=source) from None
    limit = pipeline.config.max_faces_per_image if embed_limit is None else embed_limit
    faces = pipeline.faces(rgb, embed=False, quality_filter=quality_filter, embed_acceptable=limit)
    cut = tuple(crop_of(rgb, f.bbox.as_list()) if crops and f.embedding is not None else None for f in faces)
    return EmbeddedImage(source=source, external_image_id=external_image_id, image_sha256=digest,
                         model_sha256=model_sha256, faces=tuple(faces), faces_over_limit=faces.faces_over_limit,
                         crops=cut)


def failure(source: str, external_image_id: str | None, exc: BaseException) -> ImageFailure:
    """The :class:`ImageFailure` of ``exc``; an error facelens did not raise on purpose is logged with its
    traceback (a bug, or a broken worker), and still reported for this image only."""
    if not isinstance(exc, (FacelensError, OSError)):
        log.error("%s: unexpected %s while examining the image", source, type(exc).__name__, exc_info=exc)
    message = str(exc) if isinstance(exc, FacelensError) else f"{source}: {type(exc).__name__}: {exc}"
    return ImageFailure(source=source, external_image_id=external_image_id, error_type=type(exc).__name__,
                        message=message)
