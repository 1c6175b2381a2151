"""A 720p 30 fps video made from ../shared/data/congress-past portraits, searched with Engine.search_video.

The collection holds the ``_b`` photo of each of the 200 members; the video shows their ``_a`` photos and
strangers (utkface-dev faces, not in the collection), each on screen for 2-3.5 s at one of four places
(up to 4 faces at once), drifting slowly, with gaps between appearances. The truth (who, where, from which
frame to which) is known, so the run reports:

* recall of appearances: member appearances with a track of the right person (a track overlapping the
  appearance in time and place whose match is that member);
* false persons: tracks matched to someone who is not the person on screen (strangers matched, members
  matched as someone else);
* timestamp error: |start_s - first frame| and |end_s - last frame| of each found appearance;
* speed: seconds of video per second of wall time, frames decoded per second.

Writes ``benchmarks/results/video_congress.json``. Usage (from the repository root)::

    python benchmarks/bench_video_congress.py [--duration 120] [--every 5] [--threads 2] [--seed 12]
"""

from __future__ import annotations

import argparse
import csv
import fractions
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from PIL import Image

import facelens

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SIZE = (1280, 720)
FPS = 30
SLOTS = [(40, 140), (350, 90), (660, 160), (970, 110)]  # top-left corners of the four places on screen
SPRITE_W = 230


@dataclass(frozen=True)
class Appearance:
    who: str  # a member's bioguide id, or "stranger:<file>"
    slot: int
    first_frame: int
    last_frame: int

    @property
    def member(self) -> bool:
        return not self.who.startswith("stranger:")


def _sprite(path: Path, width: int) -> npt.NDArray[np.uint8]:
    im = Image.open(path).convert("RGB")
    return np.asarray(im.resize((width, int(round(width * im.height / im.width))), Image.Resampling.BILINEAR))


def schedule(duration_s: float, members: list[str], strangers: list[str], seed: int) -> list[Appearance]:
    """Appearances at the four places: a gap of 0.4-1.5 s, then someone for 2-3.5 s; one in four a stranger."""
    rng = random.Random(seed)
    n_frames = int(duration_s * FPS)
    out = []
    pool_m, pool_s = list(members), list(strangers)
    rng.shuffle(pool_m)
    rng.shuffle(pool_s)
    for slot in range(len(SLOTS)):
        f = int(rng.uniform(0.2, 1.5) * FPS)
        while True:
            length = int(rng.uniform(2.0, 3.5) * FPS)
            if f + length >= n_frames:
                break
            who = f"stranger:{pool_s.pop()}" if rng.random() < 0.25 else pool_m.pop()
            out.append(Appearance(who=who, slot=slot, first_frame=f, last_frame=f + length - 1))
            f += length + int(rng.uniform(0.4, 1.5) * FPS)
            if not pool_m or not pool_s:
                break
    return sorted(out, key=lambda a: a.first_frame)


def make_congress_video(path: Path, duration_s: float, seed: int) -> tuple[list[Appearance], dict[str, str]]:
    """Encode the video (H.264, GOP 30) and return its appearances and each member's name."""
    with open(DATA / "congress-past" / "members.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = {r["bioguide"]: r["name"] for r in rows}
    strangers = sorted(os.listdir(DATA / "utkface-dev" / "images"))
    rng = random.Random(seed)
    strangers = rng.sample(strangers, 200)
    plan = schedule(duration_s, sorted(names), strangers, seed)
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([50 + 60 * xx / w, 70 + 50 * yy / h, np.full_like(xx, 110.0)], -1).astype(np.uint8)
    sprites: dict[str, npt.NDArray[np.uint8]] = {}
    for a in plan:
        if a.member:
            sprites[a.who] = _sprite(DATA / "congress-past" / "images" / f"{a.who}_a.jpg", SPRITE_W)
        else:
            sprites[a.who] = _sprite(DATA / "utkface-dev" / "images" / a.who.split(":", 1)[1], SPRITE_W)
    n_frames = int(duration_s * FPS)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"g": "30", "preset": "ultrafast", "crf": "23"}
        for i in range(n_frames):
            img = background.copy()
            for a in plan:
                if a.first_frame <= i <= a.last_frame:
                    sp = sprites[a.who]
                    x0, y0 = SLOTS[a.slot]
                    drift = int(round(30 * (i - a.first_frame) / max(a.last_frame - a.first_frame, 1)))
                    x, y = x0 + drift, y0
                    hh, ww = min(sp.shape[0], h - y), min(sp.shape[1], w - x)
                    img[y:y + hh, x:x + ww] = sp[:hh, :ww]
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return plan, names


def enrol(engine: facelens.Engine, names: dict[str, str]) -> None:
    engine.create_collection("congress")
    for bio in sorted(names):
        engine.index_faces("congress", DATA / "congress-past" / "images" / f"{bio}_b.jpg", external_image_id=bio,
                           person_id=bio)


def score(plan: list[Appearance], result: facelens.video.VideoResult) -> dict[str, Any]:
    """Match tracks to appearances (time overlap and place), then count."""
    def place(track: Any) -> int | None:
        xs = [(b.bbox.left + b.bbox.right) / 2 for b in track.boxes]
        if not xs:
            return None
        cx = float(np.median(xs))
        return min(range(len(SLOTS)), key=lambda s: abs(SLOTS[s][0] + SPRITE_W / 2 + 15 - cx))

    found, timing, false_persons, unmatched_tracks = 0, [], [], 0
    used: set[int] = set()
    per_app = []
    for a in plan:
        t0, t1 = a.first_frame / FPS, a.last_frame / FPS
        cands = [(i, tr) for i, tr in enumerate(result.tracks) if place(tr) == a.slot
                 and min(tr.end_s, t1) - max(tr.start_s, t0) > 0.3]
        who = set()
        for i, tr in cands:
            used.add(i)
            m = tr.search.matches if tr.search is not None else ()
            if m:
                who.add(m[0].person_id)
                if m[0].person_id != a.who:
                    false_persons.append({"appearance": a.who, "matched": m[0].person_id, "score": m[0].score,
                                          "start_s": tr.start_s})
        ok = a.member and a.who in who
        if ok:
            found += 1
            best = min((tr for _, tr in cands if tr.search is not None and tr.search.matches
                        and tr.search.matches[0].person_id == a.who), key=lambda tr: abs(tr.start_s - t0))
            timing.append((abs(best.start_s - t0), abs(best.end_s - t1)))
        per_app.append({"who": a.who, "slot": a.slot, "start_s": round(t0, 3), "end_s": round(t1, 3),
                        "tracks": len(cands), "found": ok})
    unmatched_tracks = len([i for i in range(len(result.tracks)) if i not in used])
    members = sum(a.member for a in plan)
    starts = [s for s, _ in timing]
    ends = [e for _, e in timing]
    return {"appearances": len(plan), "member_appearances": members, "stranger_appearances": len(plan) - members,
            "found": found, "recall": round(found / max(members, 1), 4),
            "false_persons": false_persons, "strangers_matched": sum(1 for f in false_persons
                                                                     if f["appearance"].startswith("stranger:")),
            "tracks": len(result.tracks), "tracks_not_on_any_appearance": unmatched_tracks,
            "start_error_s": {"median": round(float(np.median(starts)), 4) if starts else None,
                              "max": round(max(starts), 4) if starts else None},
            "end_error_s": {"median": round(float(np.median(ends)), 4) if ends else None,
                            "max": round(max(ends), 4) if ends else None},
            "frame_interval_s": round(1 / FPS, 4), "missed": [p for p in per_app if not p["found"]
                                                             and not p["who"].startswith("stranger:")]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of video")
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--keep-video", type=Path, default=None, help="write the generated video here too")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "video_congress.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = args.keep_video or Path(tmp) / "congress.mp4"
        t0 = time.perf_counter()
        plan, names = make_congress_video(video, args.duration, args.seed)
        made_s = time.perf_counter() - t0
        engine = facelens.Engine(threads=args.threads, home=Path(tmp) / "home")
        enrol(engine, names)
        engine.search_faces_by_image("congress", DATA / "congress-past" / "images" / f"{sorted(names)[0]}_a.jpg")
        load_before = os.getloadavg()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        result = engine.search_video("congress", video, every=args.every)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        load_after = os.getloadavg()
    stats = result.stats
    report = {"video": {"width": SIZE[0], "height": SIZE[1], "fps": FPS, "duration_s": args.duration,
                        "frames": int(args.duration * FPS), "encode_s": round(made_s, 1), "seed": args.seed},
              "collection_faces": len(names), "every": args.every, "threads": args.threads,
              "elapsed_s": round(elapsed, 2), "cpu_s": round(cpu, 2),
              "speed_x_real_time": round(stats.video_s / elapsed, 3),
              "frames_per_s": round(stats.frames_decoded / elapsed, 1),
              "speed_x_real_time_per_cpu_s": round(stats.video_s / cpu, 3),
              "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
              "stats": stats.to_dict(), **score(plan, result)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    brief = {k: report[k] for k in ("elapsed_s", "speed_x_real_time", "frames_per_s", "recall", "found",
                                    "member_appearances", "strangers_matched", "start_error_s", "end_error_s",
                                    "loadavg_before", "loadavg_after")}
    print(json.dumps(brief, indent=1))
    print(f"false persons: {len(report['false_persons'])}; written {args.out}")


if __name__ == "__main__":
    main()
