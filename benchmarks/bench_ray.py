"""Batch enrolment on Ray Data against `facelens index`, on LFW.

    python benchmarks/bench_ray.py [--images 13233] [--workers 1 2] [--no-kill]

1. `facelens index` (the CLI, threads as it chooses, --workers 2) on the first N LFW images: the reference
   faces and its images/s.
2. Ray Data (facelens.scale.index_with_ray, `--ray local`) with 1 and 2 worker actors of one CPU each:
   images/s of the pipeline (Ray's start-up excluded, and beside it included), images/s per worker core,
   and a check that every image has the reference's number of faces with boxes within a pixel.
3. Kill + resume: `facelens index --ray local --ray-workers 2` SIGKILLed (with its Ray) once about a third
   of the images are committed, then a re-run with resume: every image once, the reference's faces.

The machine's load average (os.getloadavg) is reported beside each number: on a shared 2-core machine the
rates fall with other work. Results: benchmarks/results/ray.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facelens  # noqa: E402
from benchmarks.common import DEFAULT_LFW, ROOT, lfw_images  # noqa: E402
from facelens.scale.ray_index import index_with_ray  # noqa: E402

CLI = [sys.executable, "-m", "facelens"]


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _faces(home: Path) -> dict[str, list[list[float]]]:
    """Boxes of the stored faces per image (file name: LFW's are unique)."""
    out: dict[str, list[list[float]]] = {}
    with facelens.Engine(home=str(home), threads=1) as engine:
        token = None
        while True:
            page, token = engine.list_faces("bench", limit=5000, next_token=token)
            for f in page:
                out.setdefault(Path(f.external_image_id or "").name, []).append(list(f.bbox))
            if token is None:
                return out


def _same(ref: dict[str, list[list[float]]], got: dict[str, list[list[float]]]) -> dict[str, Any]:
    """How the faces of a run compare with the reference's, image by image."""
    count_diff = sorted(k for k in set(ref) | set(got) if len(ref.get(k, [])) != len(got.get(k, [])))
    box_diff = []
    for k, boxes in ref.items():
        if len(got.get(k, [])) == len(boxes):
            a, b = sorted(boxes), sorted(got[k])
            if any(max(abs(x - y) for x, y in zip(p, q, strict=True)) > 1.0 for p, q in zip(a, b, strict=True)):
                box_diff.append(k)
    return {"images_with_faces": len(got), "faces": sum(map(len, got.values())),
            "images_with_other_face_count": len(count_diff), "examples": count_diff[:5],
            "images_with_a_box_off_by_more_than_1px": len(box_diff), "same_faces": not count_diff and not box_diff}


def _committed(home: Path) -> int:
    """Images recorded as indexed in the home's log (committed with their record)."""
    from facelens.accountability.log import SearchLog

    if not (home / "service").exists():
        return 0
    log = SearchLog.open(home)
    try:
        return sum(e.body.get("action") == "faces_indexed" for e in log.iter_entries())
    finally:
        log.close()


def _home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="facelens-bench-ray-"))
    subprocess.run([*CLI, "collection", "create", "bench", "--home", str(home)], check=True, capture_output=True)
    return home


def _list_file(files: list[tuple[str, str]], home: Path) -> Path:
    lst = home / "images.txt"
    lst.write_text("".join(p + "\n" for p, _ in files))
    return lst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    ap.add_argument("--images", type=int, default=None, help="the first N images (default: all 13,233)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-kill", action="store_true", help="skip the kill + resume run")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ray.json")
    args = ap.parse_args()
    files = [(str(args.lfw / "images" / p), str(args.lfw / "images" / p)) for p in lfw_images(args.lfw)]
    files = files[: args.images] if args.images else files
    n = len(files)
    result: dict[str, Any] = {"images": n, "cpus": os.cpu_count(), "load_before": _load()}

    home = _home()
    t0 = time.perf_counter()
    # the reference: `facelens index` as a user runs it (its own thread pool, no Ray)
    proc = subprocess.run([*CLI, "index", "bench", *(p for p, _ in files), "--workers", "2", "--json", "--home",
                           str(home)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    summary = json.loads(proc.stdout)["summary"]
    ref = _faces(home)
    result["facelens_index"] = {"workers": 2, "seconds": round(wall, 1), "images_per_second": round(n / wall, 2),
                                "summary": summary, "faces": sum(map(len, ref.values())), "load": _load()}
    print(json.dumps(result["facelens_index"]), file=sys.stderr)

    result["ray"] = []
    for workers in args.workers:
        home = _home()
        with facelens.Engine(home=str(home), threads=1) as engine:
            t0 = time.perf_counter()
            report = index_with_ray(engine, "bench", files, workers=workers)
            wall = time.perf_counter() - t0
        errors = sum(o.error is not None for o in report.outcomes)
        row = {"workers": workers, "pipeline_seconds": round(report.seconds, 1),
               "seconds_with_ray_start": round(wall, 1), "writer_seconds": round(report.writer_seconds, 1),
               "images_per_second": round(n / report.seconds, 2),
               "images_per_second_per_worker_core": round(n / report.seconds / workers, 2),
               "images_per_second_with_ray_start": round(n / wall, 2), "errors": errors,
               "vs_reference": _same(ref, _faces(home)), "load": _load()}
        result["ray"].append(row)
        print(json.dumps(row), file=sys.stderr)

    if not args.no_kill:
        home = _home()
        lst = _list_file(files, home)
        t0 = time.perf_counter()
        child = subprocess.Popen([*CLI, "index", "bench", f"@{lst}", "--ray", "local", "--ray-workers", "2",
                                  "--home", str(home)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        committed = 0
        while child.poll() is None and committed < n // 3:
            time.sleep(2)
            committed = _committed(home)
        for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()):
            try:
                if os.getsid(pid) == child.pid:
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        child.wait()
        before = _faces(home)
        with facelens.Engine(home=str(home), threads=1) as engine:
            report = index_with_ray(engine, "bench", files, workers=2, resume=True)
        after = _faces(home)
        per_image = Counter(len(v) for v in after.values())
        result["kill_resume"] = {"killed_after_images_with_faces": len(before), "resume_skipped": report.skipped,
                                 "resume_examined": len(report.outcomes), "seconds": round(time.perf_counter() - t0, 1),
                                 "faces_per_image": dict(per_image), "vs_reference": _same(ref, after),
                                 "load": _load()}
        print(json.dumps(result["kill_resume"]), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
