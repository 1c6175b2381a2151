"""facelens video search vs face_recognition's every-frame loop on face_recognition's own video example.

The clip is ``short_hamilton_clip.mp4`` (640x360, 29.97 fps, 275 frames) and the collection the two
reference photos of that example, ``lin-manuel-miranda.png`` and ``alex-lacamoire.png``. In the same run:

* facelens: ``Engine.search_video`` (every 5th frame examined, still frames held, tracks, a few
  embeddings per track searched at the default max FPIR);
* face_recognition 1.3.0, as its ``facerec_from_video_file.py`` example: on every frame
  ``face_locations`` (HOG), ``face_encodings`` and ``compare_faces(known, enc, tolerance=0.50)``.

Both decode the clip with PyAV (decoding is timed inside each). Reported: who is found when by each, the
"shots" in which face_recognition finds a person (its detections of that person, gaps under 0.5 s
merged) and whether facelens has a track of the same person overlapping each, and the two wall times.
Writes ``benchmarks/results/video_hamilton.json``.

Usage (from the repository root; needs ../shared/data and ``pip install --no-deps face_recognition==1.3.0``)::

    python benchmarks/bench_video.py [--every 5] [--threads 2] [--skip-face-recognition]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import av

import facelens

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "video"
PEOPLE = {"lin-manuel-miranda": "Lin-Manuel Miranda", "alex-lacamoire": "Alex Lacamoire"}
SHOT_GAP_S = 0.5


def run_facelens(clip: Path, every: int, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        engine = facelens.Engine(threads=threads, home=home)
        engine.create_collection("hamilton")
        for stem in PEOPLE:
            engine.index_faces("hamilton", DATA / f"{stem}.png", external_image_id=stem, person_id=stem)
        engine.search_faces_by_image("hamilton", DATA / "alex-lacamoire.png")  # models warm, as in a service
        t0 = time.perf_counter()
        result = engine.search_video("hamilton", clip, every=every)
        elapsed = time.perf_counter() - t0
    tracks = []
    for tr in result.tracks:
        matches = tr.search.matches if tr.search is not None else ()
        tracks.append({"start_s": round(tr.start_s, 3), "end_s": round(tr.end_s, 3), "detections": tr.detections,
                       "embeddings": 0 if tr.embeddings is None else len(tr.embeddings),
                       "person": matches[0].person_id if matches else None,
                       "score": round(matches[0].score, 3) if matches else None,
                       "fmr": matches[0].fmr if matches else None})
    op = next((tr.search.operating_point.to_dict() for tr in result.tracks if tr.search is not None), None)
    return {"elapsed_s": round(elapsed, 2), "every": every, "tracks": tracks, "stats": result.stats.to_dict(),
            "operating_point_of_one_look": op}


def run_face_recognition(clip: Path) -> dict[str, Any]:
    import face_recognition

    known = [face_recognition.face_encodings(face_recognition.load_image_file(DATA / f"{stem}.png"))[0]
             for stem in PEOPLE]
    names = list(PEOPLE)
    frames: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        for frame in container.decode(stream):
            t = float((frame.pts - start) * stream.time_base)
            rgb = frame.to_ndarray(format="rgb24")
            locations = face_recognition.face_locations(rgb)
            encodings = face_recognition.face_encodings(rgb, locations)
            found = []
            for enc in encodings:
                hits = face_recognition.compare_faces(known, enc, tolerance=0.50)
                found.append(next((n for n, h in zip(names, hits, strict=True) if h), None))
            frames.append({"time_s": round(t, 3), "faces": len(locations), "names": found})
    return {"elapsed_s": round(time.perf_counter() - t0, 2), "frames": frames}


def shots(frames: list[dict[str, Any]], person: str) -> list[tuple[float, float]]:
    """Intervals in which face_recognition finds ``person``, gaps under SHOT_GAP_S merged."""
    out: list[list[float]] = []
    for f in frames:
        if person in f["names"]:
            if out and f["time_s"] - out[-1][1] <= SHOT_GAP_S:
                out[-1][1] = f["time_s"]
            else:
                out.append([f["time_s"], f["time_s"]])
    return [(a, b) for a, b in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", type=Path, default=DATA / "short_hamilton_clip.mp4")
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-face-recognition", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "video_hamilton.json")
    args = ap.parse_args()
    with av.open(str(args.clip)) as c:
        s = c.streams.video[0]
        video = {"clip": args.clip.name, "width": s.codec_context.width, "height": s.codec_context.height,
                 "fps": float(s.average_rate or 0), "frames": s.frames,
                 "duration_s": float(s.duration * s.time_base) if s.duration else None}
    fl = run_facelens(args.clip, args.every, args.threads)
    print(f"facelens: {fl['elapsed_s']} s, {len(fl['tracks'])} tracks, stats {fl['stats']}")
    for tr in fl["tracks"]:
        print(f"  {tr['start_s']:6.2f} - {tr['end_s']:6.2f} s  {tr['person'] or '(nobody in the collection)'}"
              f"  score {tr['score']}  fmr {tr['fmr']}  ({tr['detections']} detections, {tr['embeddings']} embedded)")
    report: dict[str, Any] = {"video": video, "facelens": fl}
    if not args.skip_face_recognition:
        fr = run_face_recognition(args.clip)
        report["face_recognition"] = fr
        ratio = fr["elapsed_s"] / fl["elapsed_s"]
        print(f"face_recognition every frame: {fr['elapsed_s']} s; facelens {ratio:.1f}x faster")
        coverage = {}
        for person in PEOPLE:
            rows = []
            for a, b in shots(fr["frames"], person):
                hit = any(t["person"] == person and t["start_s"] <= b + 1e-6 and t["end_s"] >= a - 1e-6
                          for t in fl["tracks"])
                rows.append({"from_s": a, "to_s": b, "facelens_found": hit})
                print(f"  face_recognition finds {person} {a:6.2f} - {b:6.2f} s; facelens: {'yes' if hit else 'NO'}")
            coverage[person] = rows
        report["shots"] = coverage
        report["speed_ratio"] = round(fr["elapsed_s"] / fl["elapsed_s"], 2)
        fl_people = {t["person"] for t in fl["tracks"]} - {None}
        report["facelens_people_face_recognition_never_finds"] = sorted(
            p for p in fl_people if not shots(fr["frames"], p))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
