"""Shared fixtures: the bundled public-domain portraits and engines opened once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

import facelens

PORTRAITS = Path(__file__).resolve().parents[1] / "examples" / "portraits"
PEOPLE = sorted({p.stem.rsplit("_", 1)[0] for p in PORTRAITS.glob("*.jpg")})


def portrait(person: str, which: str = "a") -> Path:
    return PORTRAITS / f"{person}_{which}.jpg"


def load_rgb(path: Path) -> npt.NDArray[np.uint8]:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def engine() -> facelens.Engine:
    return facelens.Engine(threads=2)


@pytest.fixture(scope="session")
def dlib_engine() -> facelens.Engine:
    pytest.importorskip("dlib")
    return facelens.Engine(model="dlib")
