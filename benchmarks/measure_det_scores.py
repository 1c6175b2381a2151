"""Detector scores, pose and quality of real faces vs non-faces: the evidence behind the quality filter.

    python benchmarks/measure_det_scores.py [--data ../shared/data] [--lfw-images N] [--refresh]

Real faces (the largest face of each image): LFW (all 13,233 images, or an even sample of N), UTKFace-dev
(all 5,000 chips), the congress-past official portraits (all 400), the bundled examples/portraits and
congress-historical (all 3,000 portraits: old photos, engravings, paintings). Non-faces: every detection
in dlib's dogs.jpg, and every detection in crops of the sample photos' backgrounds (windows that stay
clear of every face found in the full photo, with a margin of half a face).

Detection runs once with the engine's defaults (detector threshold 0.5) and its raw output (score,
box, landmarks, sharpness, brightness) is cached in benchmarks/.cache/det_scores.json; pose and the
refusal reasons are recomputed from it with the current facelens.quality code on every run, so the
effect of a change to the pose estimate or the limits is measured without detecting again. Prints a
Markdown report and writes benchmarks/results/det_scores.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facelens  # noqa: E402
from benchmarks.common import CACHE, ROOT, lfw_images  # noqa: E402
from facelens.imageio import decode_image  # noqa: E402
from facelens.quality import LIMITS, estimate_pose, refusal_reasons  # noqa: E402
from facelens.types import Pose, Quality, QualityFilter  # noqa: E402

FACE_SETS = ("LFW", "UTKFace-dev", "congress-past", "examples/portraits", "congress-historical")
NONFACE_SETS = ("dogs.jpg", "background crops")
THRESHOLDS = (0.55, 0.6, 0.62, 0.65, 0.7)


def _record(face: facelens.Face, rgb: np.ndarray, detector: Any) -> dict[str, Any]:
    box = np.array(face.bbox.as_list(), dtype=np.float32)
    return {"score": face.score, "box": box.tolist(), "landmarks": [list(p) for p in face.landmarks],
            "sharpness": face.quality.sharpness, "brightness": face.quality.brightness,
            "face_size": face.quality.face_size, "confirmed": detector.confirm_score(rgb, box)}


def _sources(data: Path, lfw_n: int) -> dict[str, list[Path]]:
    lfw = lfw_images(data / "lfw")
    if lfw_n:
        lfw = lfw[:: max(1, len(lfw) // lfw_n)][:lfw_n]
    return {
        "LFW": [data / "lfw" / "images" / p for p in lfw],
        "UTKFace-dev": sorted((data / "utkface-dev" / "images").glob("*.jpg")),
        "congress-past": sorted((data / "congress-past" / "images").glob("*.jpg")),
        "examples/portraits": sorted((ROOT / "examples" / "portraits").glob("*.jpg")),
        "congress-historical": sorted((data / "congress-historical" / "images").glob("*.jpg")),
    }


def _sample_photos(data: Path) -> list[Path]:
    s = data / "samples"
    files = sorted((s / "dlib" / "faces").glob("*.jpg")) + sorted((s / "face_recognition").rglob("*.jp*g"))
    files += sorted((s / "insightface_wheel").glob("*.jpg"))
    return [f for f in files if f.name != "dogs.jpg"]


def _background_crops(engine: facelens.Engine, photo: Path) -> list[np.ndarray]:
    """Square windows of the photo (1/3 and 1/5 of its shorter side) clear of every face found in it."""
    rgb = decode_image(photo)
    h, w = rgb.shape[:2]
    faces = engine.detect(rgb, quality_filter="NONE")
    keep_out = []
    for f in faces:
        b, m = f.bbox, 0.5 * max(f.bbox.width, f.bbox.height)
        keep_out.append((b.left - m, b.top - m, b.right + m, b.bottom + m))
    crops = []
    for frac in (3, 5):
        side = min(h, w) // frac
        if side < 48:
            continue
        for y in range(0, h - side + 1, side // 2):
            for x in range(0, w - side + 1, side // 2):
                clear = all(x + side <= k[0] or x >= k[2] or y + side <= k[1] or y >= k[3] for k in keep_out)
                if clear:
                    crops.append(rgb[y : y + side, x : x + side])
    return crops


def detect_all(data: Path, lfw_n: int, threads: int) -> dict[str, Any]:
    engine = facelens.Engine(threads=threads, quality_filter="NONE")
    assert engine.backend is not None
    det = engine.backend.detector
    raw: dict[str, Any] = {"faces": {}, "nonfaces": {}, "lfw_images": lfw_n}
    for name, files in _sources(data, lfw_n).items():
        rows = []
        for f in tqdm(files, desc=name, unit="img"):
            rgb = decode_image(f)
            faces = engine.detect(rgb)  # largest first
            rows.append({"image": str(f), "largest": _record(faces[0], rgb, det) if faces else None})
        raw["faces"][name] = rows
    dog_rgb = decode_image(data / "samples" / "dlib" / "faces" / "dogs.jpg")
    raw["nonfaces"]["dogs.jpg"] = {"inputs": 1, "detections": [_record(f, dog_rgb, det)
                                                                for f in engine.detect(dog_rgb)]}
    crops: list[np.ndarray] = []
    for photo in _sample_photos(data):
        crops += _background_crops(engine, photo)
    dets = []
    for c in tqdm(crops, desc="background crops", unit="crop"):
        dets += [_record(f, c, det) for f in engine.detect(c)]
    raw["nonfaces"]["background crops"] = {"inputs": len(crops), "detections": dets}
    return raw


def _assess(rec: dict[str, Any]) -> tuple[Pose, dict[str, list[str]]]:
    pose = estimate_pose(np.array(rec["landmarks"]))
    quality = Quality(sharpness=rec["sharpness"], brightness=rec["brightness"], face_size=rec["face_size"])
    reasons = {level.value: [r.value for r in refusal_reasons(rec["score"], pose, quality, level,
                                                              confirmed_score=rec["confirmed"])]
               for level in (QualityFilter.LOW, QualityFilter.MEDIUM, QualityFilter.HIGH, QualityFilter.AUTO)}
    return pose, reasons


def _nose_ratio(landmarks: list[list[float]]) -> float:
    """Where the nose tip lies between the eye line (0) and the mouth line (1), roll removed."""
    le, re, nose, lm, rm = (np.array(p, dtype=np.float64) for p in landmarks)
    ang = np.arctan2(re[1] - le[1], re[0] - le[0])
    c, s = np.cos(-ang), np.sin(-ang)
    rot = np.array([[c, -s], [s, c]])
    mid = (le + re) / 2.0
    ny = ((nose - mid) @ rot.T)[1]
    my = ((((lm + rm) / 2.0) - mid) @ rot.T)[1]
    return float(ny / max(my, 1e-6))


def _stats(v: list[float]) -> dict[str, float]:
    a = np.array(v, dtype=np.float64)
    return {"n": int(a.size), "mean": float(a.mean()), "min": float(a.min()), "p0.1": float(np.percentile(a, 0.1)),
            "p1": float(np.percentile(a, 1)),
            "p5": float(np.percentile(a, 5)), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max())}


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"faces": {}, "nonfaces": {}, "limits": {q.value: {
        "min_score": lim.min_score, "max_yaw": lim.max_yaw, "max_pitch": lim.max_pitch} for q, lim in LIMITS.items()}}
    for name in FACE_SETS:
        rows = raw["faces"][name]
        found = [r["largest"] for r in rows if r["largest"] is not None]
        scores = [f["score"] for f in found]
        poses, refused = [], {lv: Counter() for lv in ("LOW", "MEDIUM", "HIGH", "AUTO")}
        for f in found:
            pose, reasons = _assess(f)
            poses.append(pose)
            for lv, rs in reasons.items():
                refused[lv]["any"] += bool(rs)
                refused[lv].update(rs)
        confirmed = [f["confirmed"] for f in found]
        out["faces"][name] = {
            "images": len(rows), "with_face": len(found), "score": _stats(scores), "confirmed": _stats(confirmed),
            "confirmed_below": {str(t): sum(c < t for c in confirmed) for t in (0.3, 0.5)},
            "below": {str(t): sum(s < t for s in scores) for t in THRESHOLDS},
            "pitch": _stats([p.pitch for p in poses]), "yaw": _stats([p.yaw for p in poses]),
            "nose_ratio": _stats([_nose_ratio(f["landmarks"]) for f in found]),
            "refused": {lv: dict(c) for lv, c in refused.items()},
        }
    for name in NONFACE_SETS:
        d = raw["nonfaces"][name]
        dets = d["detections"]
        out["nonfaces"][name] = {
            "inputs": d["inputs"], "detections": len(dets),
            "scores": [round(x["score"], 4) for x in dets], "confirmed": [round(x["confirmed"], 4) for x in dets],
            "accepted_by": {lv: sum(not _assess(x)[1][lv] for x in dets) for lv in ("LOW", "MEDIUM", "HIGH", "AUTO")},
            "pitch": [round(_assess(x)[0].pitch, 1) for x in dets],
        }
    return out


def _print(s: dict[str, Any]) -> None:
    print("| set | images | largest face found | min score | p1 | p5 | median | "
          + " | ".join(f"< {t}" for t in THRESHOLDS) + " |")
    print("|---" * (8 + len(THRESHOLDS)) + "|")
    for name, r in s["faces"].items():
        sc = r["score"]
        print(f"| {name} | {r['images']} | {r['with_face']} | {sc['min']:.3f} | {sc['p1']:.3f} | {sc['p5']:.3f} | "
              f"{sc['median']:.3f} | " + " | ".join(str(r["below"][str(t)]) for t in THRESHOLDS) + " |")
    print()
    print("| set | second-look score min | p0.1 | p1 | median | < 0.3 | < 0.5 |")
    print("|---" * 7 + "|")
    for name, r in s["faces"].items():
        c = r["confirmed"]
        print(f"| {name} | {c['min']:.3f} | {c['p0.1']:.3f} | {c['p1']:.3f} | {c['median']:.3f} | "
              f"{r['confirmed_below']['0.3']} | {r['confirmed_below']['0.5']} |")
    print()
    for name, r in s["nonfaces"].items():
        top = ", ".join(f"{x:.3f} (second look {c:.3f})" for x, c in zip(r["scores"], r["confirmed"], strict=True))
        print(f"- {name}: {r['inputs']} input(s), {r['detections']} detection(s), scores {top}; accepted by "
              + ", ".join(f"{lv} {n}" for lv, n in r["accepted_by"].items()) + f"; pitch {r['pitch'][:10]}")
    print()
    print("| set | pitch mean | min | p5 | p95 | max | nose ratio median | yaw mean | refused for pose "
          "LOW / MEDIUM / HIGH | refused (any reason) LOW / MEDIUM / HIGH | refused for LOW_CONFIDENCE AUTO |")
    print("|---" * 12 + "|")
    for name, r in s["faces"].items():
        p, ref = r["pitch"], r["refused"]
        pose = " / ".join(str(ref[lv].get("EXTREME_POSE", 0)) for lv in ("LOW", "MEDIUM", "HIGH"))
        anyr = " / ".join(str(ref[lv].get("any", 0)) for lv in ("LOW", "MEDIUM", "HIGH"))
        print(f"| {name} | {p['mean']:+.1f} | {p['min']:+.1f} | {p['p5']:+.1f} | {p['p95']:+.1f} | {p['max']:+.1f} | "
              f"{r['nose_ratio']['median']:.3f} | {r['yaw']['mean']:+.1f} | {pose} | {anyr} | "
              f"{ref['AUTO'].get('LOW_CONFIDENCE', 0)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--lfw-images", type=int, default=0, help="an even sample of N LFW images (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--refresh", action="store_true", help="detect again instead of reading the cache")
    args = ap.parse_args()
    cache = CACHE / "det_scores.json"
    raw = None
    if cache.exists() and not args.refresh:
        raw = json.loads(cache.read_text())
        if raw.get("lfw_images") != args.lfw_images:
            raw = None
    if raw is None:
        raw = detect_all(args.data, args.lfw_images, args.threads)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(raw))
    summary = summarise(raw)
    out = ROOT / "benchmarks" / "results" / "det_scores.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    _print(summary)


if __name__ == "__main__":
    main()
