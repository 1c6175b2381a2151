"""Live sources on 127.0.0.1 for the stream tests: a test video made from the bundled portraits, served
by real processes (ffmpeg's HTTP server for MPEG-TS, Debian's rtsp-server-perl with ffmpeg publishing to
it). Tests that need them skip, saying why, when ffmpeg or rtsp-server-perl is not installed (.ci/run
installs both)."""

from __future__ import annotations

import fractions
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from .conftest import portrait

FPS = 25
SIZE = (640, 360)
#: the test video: nobody for 0.8 s, then A000368 (in the collection) until 4.0 s, nobody until 4.8 s
PERSON, ENTERS_S, LEAVES_S, DURATION_S = "A000368", 0.8, 4.0, 4.8


def need(*programs: str) -> None:
    """Skip the test, saying what is missing, unless every program is installed."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install ffmpeg rtsp-server-perl; .ci/run does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_stream_video(path: Path, *, size: tuple[int, int] = SIZE, fps: int = FPS, duration_s: float = DURATION_S,
                      person: str = PERSON, enters_s: float = ENTERS_S, leaves_s: float = LEAVES_S,
                      appearances: list[tuple[str, float, float]] | None = None) -> Path:
    """An H.264 mp4 (GOP of 25 frames, so that a reader joining a live stream waits at most a second for a
    key frame) with ``person``'s portrait moving slowly across a gradient between ``enters_s`` and
    ``leaves_s`` (or each of ``appearances``: (person, enters_s, leaves_s), one after the other, at the
    same place)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([60 + 80 * xx / w, 90 + 40 * yy / h, np.full_like(xx, 120.0)], -1).astype(np.uint8)
    sw = max(w // 4, 120)
    sprites = {}
    scene = appearances or [(person, enters_s, leaves_s)]
    for who, _, _ in scene:
        im = Image.open(portrait(who)).convert("RGB")
        sprite = np.asarray(im.resize((sw, int(round(sw * im.height / im.width))), Image.Resampling.BILINEAR))
        sh = min(sprite.shape[0], h - 20)
        sprites[who] = sprite[:sh]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"g": "25", "preset": "ultrafast", "tune": "zerolatency"}
        n = int(round(duration_s * fps))
        for i in range(n):
            t = i / fps
            img = background.copy()
            for who, t0, t1 in scene:
                if t0 <= t <= t1:
                    span = (w - sw - 80) if appearances is None else 40  # one after the other: about the same place
                    x = int((40 if appearances is None else 180) + span * (t - t0) / max(t1 - t0, 1e-6))
                    sp = sprites[who]
                    img[10:10 + sp.shape[0], x:x + sw] = sp
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


class Process:
    """A child process killed (SIGKILL) at the end of the test if still running."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self._file = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(args, stdout=self._file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
        self._file.close()


def _listening(port: int) -> bool:
    """Whether a TCP socket listens on ``port`` (from /proc/net/tcp, without connecting: ``ffmpeg -listen
    1`` would take a probe connection for its one client)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        parts = line.split()
        if len(parts) > 3 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def http_ts_server(video: Path, port: int, log: Path, *, realtime: bool = True, loop: bool = True) -> Process:
    """``ffmpeg -listen 1``: serves ``video`` as MPEG-TS over HTTP to one client (at its frame rate when
    ``realtime``, else as fast as the client reads), looping."""
    args = ["ffmpeg", "-nostdin", "-loglevel", "warning"]
    if realtime:
        args.append("-re")
    if loop:
        args += ["-stream_loop", "-1"]
    args += ["-i", str(video), "-c", "copy", "-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}/live.ts"]
    return Process(args, log)


class RtspSource:
    """rtsp-server-perl on two free ports, ffmpeg publishing ``video`` to it in a loop at its frame rate
    (RTP over UDP: the only transport this server takes). Read at :attr:`url`."""

    def __init__(self, video: Path, workdir: Path) -> None:
        self.client_port, source_port = free_port(), free_port()
        rtp = str(20000 + source_port % 20000)
        self.server = Process(["rtsp-server-perl", "--clientport", str(self.client_port), "--serverport",
                               str(source_port), "--client_listen_address", "127.0.0.1",
                               "--source_listen_address", "127.0.0.1", "--rtp_start_port", rtp],
                              workdir / "rtsp-server.log")
        wait_port(source_port)
        wait_port(self.client_port)
        self.publisher = Process(["ffmpeg", "-nostdin", "-loglevel", "warning", "-re", "-stream_loop", "-1", "-i",
                                  str(video), "-c", "copy", "-f", "rtsp", f"rtsp://127.0.0.1:{source_port}/cam"],
                                 workdir / "rtsp-publisher.log")
        self.url = f"rtsp://127.0.0.1:{self.client_port}/cam"
        time.sleep(1.0)  # the publisher announces the stream

    def stop(self) -> None:
        self.publisher.stop()
        self.server.stop()
