"""An annotated copy of a video for reviewers: each track's box and name drawn on the frames showing it.

The copy has the frames and presentation times of the original (H.264 in an mp4, or whatever the file
name's extension asks FFmpeg for); boxes between a track's sampled boxes are interpolated. A track is
labelled with the person (or external image id) of its best match, ``lead?`` and the best candidate when
the search was an investigation (a lead, not a match), ``?`` when nobody of the collection matched, and
``#id`` alone for ``detect_video`` results.
"""

from __future__ import annotations

import bisect
import fractions
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..types import SearchMode
from .decode import VideoSource, open_video
from .pipeline import Track, VideoResult

__all__ = ["track_label", "write_annotated_video"]

_MATCH = (40, 200, 40)  # RGB: a match
_LEAD = (230, 160, 20)  # a lead to review
_NONE = (220, 40, 40)  # nobody of the collection, or not searched


def track_label(track: Track) -> tuple[str, tuple[int, int, int]]:
    """The text and colour drawn for a track."""
    s = track.search
    if s is None:
        return f"#{track.track_id}", _NONE
    if s.mode is SearchMode.INVESTIGATE:
        if s.candidates:
            c = s.candidates[0]
            return f"#{track.track_id} lead? {c.person_id or c.external_image_id or c.face_id[:8]}", _LEAD
        return f"#{track.track_id} ?", _NONE
    if s.matches:
        m = s.matches[0]
        return f"#{track.track_id} {m.person_id or m.external_image_id or m.face_id[:8]}", _MATCH
    return f"#{track.track_id} ?", _NONE


def _box_at(track: Track, times: list[float], t: float) -> npt.NDArray[np.float64] | None:
    if not track.boxes or not track.start_s - 1e-6 <= t <= track.end_s + 1e-6:
        return None
    i = bisect.bisect_left(times, t)
    if i <= 0:
        return np.array(track.boxes[0].bbox.as_list())
    if i >= len(times):
        return np.array(track.boxes[-1].bbox.as_list())
    a, b = track.boxes[i - 1], track.boxes[i]
    w = (t - a.time_s) / max(b.time_s - a.time_s, 1e-9)
    return (1 - w) * np.array(a.bbox.as_list()) + w * np.array(b.bbox.as_list())


def write_annotated_video(result: VideoResult, source: VideoSource | Path, out: str | Path, *,
                          max_pixels: int = 40_000_000) -> int:
    """Write ``source`` to ``out`` with ``result``'s tracks drawn on it; returns the number of frames."""
    import av
    import cv2

    labels = [track_label(t) for t in result.tracks]
    sample_times = [[b.time_s for b in t.boxes] for t in result.tracks]
    n = 0
    with open_video(source, max_pixels=max_pixels) as reader:
        info = reader.info
        rate = fractions.Fraction(info.fps).limit_denominator(1001) if info.fps else fractions.Fraction(30)
        tb = fractions.Fraction(1, 90_000)
        with av.open(str(out), "w") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = info.width - info.width % 2, \
                info.height - info.height % 2, "yuv420p"
            stream.codec_context.time_base = tb
            last_pts = -1
            for frame in reader.frames():
                img = np.ascontiguousarray(frame.rgb()[: stream.height, : stream.width])
                for track, times, (text, colour) in zip(result.tracks, sample_times, labels, strict=True):
                    box = _box_at(track, times, frame.time_s)
                    if box is None:
                        continue
                    x0, y0, x1, y1 = (int(round(v)) for v in box)
                    cv2.rectangle(img, (x0, y0), (x1, y1), colour, 2)
                    cv2.putText(img, text, (x0, max(y0 - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1,
                                cv2.LINE_AA)
                out_frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                pts = max(int(round(frame.time_s / tb)), last_pts + 1)
                out_frame.pts, out_frame.time_base, last_pts = pts, tb, pts
                for packet in stream.encode(out_frame):
                    container.mux(packet)
                frame.release()
                n += 1
            for packet in stream.encode(None):
                container.mux(packet)
    return n
