"""A live 720p 30 fps stream on loopback followed with Engine.watch_stream: frames dropped, match latency,
memory and CPU over time.

The source: the congress video of ``bench_video_congress.py`` (members' ``_a`` photos and strangers, up to
4 faces on screen), served in a loop at its frame rate by ``ffmpeg -re -stream_loop -1 ... -f mpegts
-listen 1 http://127.0.0.1:PORT/live.ts``. The collection holds the members' ``_b`` photos. Every
``--sample`` seconds the stream's status (frames decoded, analysed, dropped, fps, latencies) and this
process's RSS and CPU time are recorded. Each ``track_identified`` event is checked against the schedule
(the person at that place on screen at that time): ``false_matches`` counts identifications of someone
else. Latency: from a frame's arrival at the reader to the event (``latency_ms``), and from the face's
first frame on screen to the event (``since_on_screen_ms``: that plus how long the face was on screen
before the frame that was identified; the source runs at real time, so the two clocks agree).

Writes ``benchmarks/results/stream_live.json``. Usage (from the repository root; needs ffmpeg)::

    python benchmarks/bench_stream.py [--duration 600] [--video-s 60] [--every 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import facelens

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_video_congress import FPS, SLOTS, SPRITE_W, enrol, make_congress_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds to watch the stream")
    ap.add_argument("--video-s", type=float, default=60.0, help="length of the looped source video")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sample", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stream_live.json")
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is not installed (apt-get install ffmpeg)")
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "congress.mp4"
        plan, names = make_congress_video(video, args.video_s, args.seed)
        engine = facelens.Engine(threads=args.threads, home=Path(tmp) / "home")
        enrol(engine, names)
        port = _port()
        ff = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                               str(video), "-c", "copy", "-f", "mpegts", "-listen", "1",
                               f"http://127.0.0.1:{port}/live.ts"], stdin=subprocess.DEVNULL)
        try:
            while not _listening(port):
                time.sleep(0.05)
            events: list[dict[str, Any]] = []
            samples = []
            cpu0, t0 = time.process_time(), time.monotonic()
            p = engine.watch_stream("congress", f"http://127.0.0.1:{port}/live.ts", name="bench", every=args.every,
                                    on_event=lambda e: events.append(e.to_dict()))
            next_sample = t0
            while time.monotonic() - t0 < args.duration and not p.done:
                if time.monotonic() >= next_sample:
                    s = p.status()
                    samples.append({"t_s": round(time.monotonic() - t0, 1), "rss_mb": round(_rss_mb(), 1),
                                    "cpu_s": round(time.process_time() - cpu0, 1), "load1": os.getloadavg()[0],
                                    "frames_decoded": s.frames_decoded, "frames_offered": s.frames_offered,
                                    "frames_analysed": s.frames_analysed, "frames_dropped": s.frames_dropped,
                                    "frames_still": s.frames_still, "fps_in": s.fps_in, "fps_out": s.fps_out,
                                    "frame_latency_ms": s.frame_latency_ms, "tracks_open": s.tracks_open})
                    print(json.dumps(samples[-1]), flush=True)
                    next_sample += args.sample
                time.sleep(0.2)
            final = p.stop()
            wall = time.monotonic() - t0
            cpu = time.process_time() - cpu0
        finally:
            ff.send_signal(signal.SIGKILL)
            ff.wait()
    hits = [e for e in events if e["kind"] == "track_identified"]
    lat = np.array([e["latency_ms"] for e in hits], dtype=float)
    since, false_matches = [], []
    for e in hits:
        t = float(e["stream_time_s"]) % args.video_s
        cx = (e["bbox"][0] + e["bbox"][2]) / 2
        slot = min(range(len(SLOTS)), key=lambda k: abs(SLOTS[k][0] + SPRITE_W / 2 + 15 - cx))
        on = [a for a in plan if a.slot == slot and a.first_frame / FPS - 0.1 <= t <= a.last_frame / FPS + 0.1]
        who = e["matches"][0]["person_id"]
        if not on or on[0].who != who:
            false_matches.append({"t": round(t, 2), "slot": slot, "matched": who,
                                  "on_screen": on[0].who if on else None})
        elif on:
            since.append(e["latency_ms"] + 1000 * max(t - on[0].first_frame / FPS, 0.0))
    member_apps_per_loop = sum(a.member for a in plan)

    def pct(values: Any) -> dict[str, float | None]:
        arr = np.asarray(values, dtype=float)
        return {"p50": round(float(np.percentile(arr, 50)), 1) if arr.size else None,
                "p95": round(float(np.percentile(arr, 95)), 1) if arr.size else None,
                "max": round(float(arr.max()), 1) if arr.size else None}

    report = {"duration_s": round(wall, 1), "video_s": args.video_s, "every": args.every, "threads": args.threads,
              "final": final.to_dict(), "cpu_s": round(cpu, 1), "cpu_cores_used": round(cpu / wall, 2),
              "frames_analysed_per_s": round(final.frames_analysed / wall, 2),
              "cpu_ms_per_frame_decoded_and_analysed": round(1000 * cpu / max(final.frames_analysed, 1), 1),
              "dropped_fraction": round(final.frames_dropped / max(final.frames_offered, 1), 4),
              "identified_events": len(hits), "member_appearances_shown": round(member_apps_per_loop * wall
                                                                                 / args.video_s),
              "false_matches": false_matches, "match_latency_ms": pct(lat),
              "since_on_screen_ms": pct(since), "rss_mb": {"first": samples[0]["rss_mb"] if samples else None,
                                                           "max": max(s["rss_mb"] for s in samples) if samples
                                                           else None,
                                                           "last": samples[-1]["rss_mb"] if samples else None},
              "samples": samples}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("samples", "final")}, indent=1))
    print(json.dumps({k: final.to_dict()[k] for k in ("frames_decoded", "frames_offered", "frames_analysed",
                                                       "frames_dropped", "frames_still")}))


if __name__ == "__main__":
    main()
