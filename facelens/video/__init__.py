"""Video: faces found, tracked and searched in stored videos (see docs/video.md).

The engine's :meth:`facelens.Engine.detect_video` and :meth:`facelens.Engine.search_video` are the API;
this package holds their parts: decoding (:mod:`.decode`, PyAV), tracking (:mod:`.tracking`) and the
pipeline that composes them with the engine's detect, embed and search steps (:mod:`.pipeline`), and live
streams (:mod:`.stream`, behind :meth:`facelens.Engine.watch_stream`).
"""

from __future__ import annotations

from .annotate import write_annotated_video
from .decode import DecodedFrame, VideoInfo, VideoReader, open_video
from .pipeline import Track, TrackBox, VideoOptions, VideoProgress, VideoResult, VideoStats, face_rank
from .stream import StreamEvent, StreamOptions, StreamProcessor, StreamStatus
from .tracking import FaceTracker

__all__ = ["DecodedFrame", "FaceTracker", "StreamEvent", "StreamOptions", "StreamProcessor", "StreamStatus",
           "Track", "TrackBox", "VideoInfo", "VideoOptions", "VideoProgress",
           "VideoReader", "VideoResult", "VideoStats", "face_rank", "open_video",
           "write_annotated_video"]
