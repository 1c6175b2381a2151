"""Scale-out: work spread over many processes or machines, committed through the same engine API.

:mod:`facelens.scale.embedded` holds what a worker computes for one image (:class:`EmbeddedImage`, or
:class:`ImageFailure` naming why it could not); :meth:`facelens.Engine.index_embedded` commits it exactly as
:meth:`facelens.Engine.index_faces` would have. :mod:`facelens.scale.ray_index` runs the workers on Ray Data
(``pip install 'facelens[scale]'``; Ray is imported only when a pipeline runs).
"""

from __future__ import annotations

from .embedded import EmbeddedImage, ImageFailure, embed_image

__all__ = ["EmbeddedImage", "ImageFailure", "embed_image"]
