"""Shared helpers for the LFW benchmarks: listing images, reading pairs.txt, caching embeddings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
DEFAULT_LFW = ROOT.parent / "shared" / "data" / "lfw"


def lfw_images(lfw: Path) -> list[str]:
    """Paths of every LFW image relative to lfw/images, sorted ("Name/Name_0001.jpg")."""
    root = lfw / "images"
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))


def identity(relpath: str) -> str:
    return relpath.split("/", 1)[0]


def read_pairs(lfw: Path) -> list[tuple[int, str, str, bool]]:
    """LFW View 2 pairs as (fold, path_a, path_b, same)."""
    lines = (lfw / "protocol" / "pairs.txt").read_text().split("\n")
    n_folds, n_per = (int(v) for v in lines[0].split())
    pairs = []
    rows = [ln.split() for ln in lines[1:] if ln.strip()]
    for i, r in enumerate(rows):
        fold = i // (2 * n_per)
        if len(r) == 3:
            a = f"{r[0]}/{r[0]}_{int(r[1]):04d}.jpg"
            b = f"{r[0]}/{r[0]}_{int(r[2]):04d}.jpg"
            pairs.append((fold, a, b, True))
        else:
            a = f"{r[0]}/{r[0]}_{int(r[1]):04d}.jpg"
            b = f"{r[2]}/{r[2]}_{int(r[3]):04d}.jpg"
            pairs.append((fold, a, b, False))
    assert len(pairs) == n_folds * n_per * 2, len(pairs)
    return pairs


def central_index(boxes: list[tuple[float, float, float, float]], width: int, height: int) -> int:
    """Index of the box whose centre is nearest the image centre (LFW's subject is centred)."""
    cx, cy = width / 2.0, height / 2.0
    d = [((b[0] + b[2]) / 2 - cx) ** 2 + ((b[1] + b[3]) / 2 - cy) ** 2 for b in boxes]
    return int(np.argmin(d))


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
