"""Video decoding with PyAV (FFmpeg's libraries, shipped in its wheels).

Frames come with their presentation time from the container, in seconds from the stream's first frame
(``(pts - start_time) * time_base``), not from a frame count: variable frame rates, dropped frames and
edit lists give the times a player shows. Anything FFmpeg cannot open or decode (not a video, no video
stream, corrupt or truncated data) raises :class:`facelens.errors.VideoDecodeError` naming the file.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidArgumentError, VideoDecodeError

__all__ = ["DecodedFrame", "VideoInfo", "VideoReader", "open_video"]

log = logging.getLogger(__name__)

VideoSource = str | os.PathLike[str]
"""A video file's path, or a URL FFmpeg reads (``rtsp://``, ``http://``, ``udp://``...)."""

_THUMB_WIDTH = 64  # the grey thumbnails compared to tell whether anything moved
_STILL_FORMATS = {"image2"}  # with the "*_pipe" formats: FFmpeg opens photos as one-frame videos
_LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21",
               "gray"}


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What the container says about its video stream. ``fps`` is the average frame rate (``None`` when
    the container does not say), ``duration_s`` the stream's duration when known, ``frames`` the number
    of frames it declares (``None`` when it declares none)."""

    source: str
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    frames: int | None
    codec: str
    container: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "width": self.width, "height": self.height, "fps": self.fps,
                "duration_s": self.duration_s, "frames": self.frames, "codec": self.codec,
                "container": self.container}


class DecodedFrame:
    """One decoded frame: ``index`` (0 for the first decoded), ``time_s`` (presentation time in seconds
    from the stream's first frame). Pixels are converted only when asked for (:meth:`rgb`,
    :meth:`thumbnail`), so frames that are not examined cost only their decoding."""

    __slots__ = ("_frame", "_rgb", "index", "time_s")

    def __init__(self, frame: Any, index: int, time_s: float) -> None:
        self._frame = frame
        self._rgb: npt.NDArray[np.uint8] | None = None
        self.index = index
        self.time_s = time_s

    def rgb(self) -> npt.NDArray[np.uint8]:
        """The frame as an (H, W, 3) uint8 RGB array (converted once, then kept)."""
        if self._rgb is None:
            self._rgb = np.ascontiguousarray(self._frame.to_ndarray(format="rgb24"), dtype=np.uint8)
        return self._rgb

    def thumbnail(self) -> npt.NDArray[np.float32]:
        """A small grey copy (64 pixels wide) to compare frames for motion."""
        import cv2

        frame = self._frame
        w, h = frame.width, frame.height
        th = max(2, int(round(_THUMB_WIDTH * h / max(w, 1))))
        if frame.format.name in _LUMA_FIRST:  # the first plane is the grey picture: no conversion needed
            plane = frame.planes[0]
            luma = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)[:h, :w]
        else:
            luma = frame.reformat(format="gray").to_ndarray()
        return cv2.resize(luma, (_THUMB_WIDTH, th), interpolation=cv2.INTER_AREA).astype(np.float32)

    def release(self) -> None:
        """Drop the decoded pixels (the frame keeps its index and time)."""
        self._frame = None
        self._rgb = None


def _describe(source: VideoSource) -> str:
    return os.fspath(source)


def _is_url(name: str) -> bool:
    return re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", name) is not None


def _reason(exc: BaseException) -> str:
    """FFmpeg's words for an error, without PyAV's repetition of the file name."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).rstrip(".")


class VideoReader:
    """An open video: :attr:`info`, then :meth:`frames` once. Use as a context manager (or call
    :meth:`close`)."""

    def __init__(self, source: VideoSource, *, max_pixels: int, threads: int = 0, timeout_s: float = 10.0) -> None:
        import av

        name = _describe(source)
        self.source = name
        if not _is_url(name):
            try:
                st = os.stat(name)
            except FileNotFoundError:
                raise VideoDecodeError("no such file", source=name) from None
            except OSError as e:
                raise VideoDecodeError(f"cannot read the file ({_reason(e)})", source=name) from None
            if not stat.S_ISREG(st.st_mode):
                raise VideoDecodeError("not a regular file (a directory, FIFO or device is not a video)",
                                       source=name)
            if st.st_size == 0:
                raise VideoDecodeError("empty file (0 bytes)", source=name)
        try:
            self._container = av.open(name, mode="r", timeout=timeout_s)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise VideoDecodeError(f"not a video FFmpeg can open ({_reason(e)})", source=name) from None
        try:
            fmt = str(self._container.format.name)
            if fmt in _STILL_FORMATS or fmt.endswith("_pipe"):
                raise VideoDecodeError(f"a still image ({fmt}), not a video: search it as an image", source=name)
            streams = self._container.streams.video
            if not streams:
                raise VideoDecodeError("the file holds no video stream", source=name)
            self._stream = stream = streams[0]
            ctx = stream.codec_context
            width, height = int(ctx.width or 0), int(ctx.height or 0)
            if width <= 0 or height <= 0:
                raise VideoDecodeError("the video stream has no frame size (corrupt header)", source=name)
            if width * height > max_pixels:
                raise VideoDecodeError(
                    f"frames are {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
                    f"(raise max_pixels / FACELENS_MAX_PIXELS if this is intended)", source=name)
            stream.thread_type = "AUTO"
            if threads:
                ctx.thread_count = threads
            tb: Fraction | None = stream.time_base
            duration = float(stream.duration * tb) if stream.duration and tb else None
            if duration is None and self._container.duration:
                duration = float(self._container.duration) / 1_000_000
            rate = stream.average_rate or stream.guessed_rate
            self.info = VideoInfo(source=name, width=width, height=height,
                                  fps=float(rate) if rate else None, duration_s=duration,
                                  frames=int(stream.frames) or None, codec=str(ctx.name),
                                  container=str(self._container.format.name))
        except BaseException:
            self._container.close()
            raise
        self._used = False

    def frames(self) -> Iterator[DecodedFrame]:
        """The frames in presentation order. Raises VideoDecodeError, with the time reached, when the data
        is damaged or the file ends before the frames its container declares (truncated)."""
        import av

        if self._used:
            raise InvalidArgumentError("a VideoReader's frames can be read once")
        self._used = True
        stream = self._stream
        tb = stream.time_base or Fraction(1, 90_000)
        start: int | None = stream.start_time
        step = 1.0 / self.info.fps if self.info.fps else 1 / 30
        last = -math.inf
        index = 0
        decoder = self._container.decode(stream)
        while True:
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except (av.FFmpegError, OSError) as e:
                raise VideoDecodeError(f"the video is damaged or truncated ({_reason(e)})", source=self.source,
                                       at_s=None if index == 0 else max(last, 0.0)) from None
            pts = frame.pts
            if pts is None:  # no timestamp: one frame interval after the previous
                t = 0.0 if index == 0 else last + step
            else:
                if start is None:
                    start = pts
                t = float((pts - start) * tb)
            if t <= last:  # a repeated or out-of-order timestamp: keep time moving forward
                t = last + 1e-6
            last = t
            yield DecodedFrame(frame, index, t)
            index += 1
        # fewer frames than the container declares, ending well before its duration: cut short (an edit
        # list can drop a few frames, so both must be short)
        declared, duration = self.info.frames, self.info.duration_s
        short_time = duration is None or last < duration - 2 * step - 0.5
        if declared and index < declared - 1 and short_time and not _is_url(self.source):
            raise VideoDecodeError(
                f"the video ends after {index} of the {declared} frames its container declares (truncated?)",
                source=self.source, at_s=max(last, 0.0) if index else None)
        if index == 0:
            raise VideoDecodeError("no frame could be decoded", source=self.source)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video(source: VideoSource | Path, *, max_pixels: int, threads: int = 0) -> VideoReader:
    """Open a video file (or a URL FFmpeg reads) for decoding; raises VideoDecodeError naming it."""
    return VideoReader(source, max_pixels=max_pixels, threads=threads)
