"""Inputs found by the fuzzers (benchmarks/fuzz_decode.py, fuzz_api.py) that break a promise, as regression tests.

Each case file lives in benchmarks/fuzz_cases/. A case that still fails is marked xfail(strict=True): once
the bug is fixed the test passes, strict xfail turns that into a failure, and the fixer removes the mark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facelens.errors import ImageDecodeError
from facelens.imageio import decode_image

CASES = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_cases"

# Fixed: decode_image let ImageOps.exif_transpose's exception escape: a WebP whose EXIF has a valid orientation
# (8) but a corrupt value in another tag made Pillow fail re-serialising the EXIF (TypeError, struct.error).


def _decodes_or_refuses(data: bytes) -> None:
    """The promise for any bytes: an (H, W, 3) uint8 array, or ImageDecodeError (ImageTooLargeError included)."""
    try:
        arr = decode_image(data)
    except ImageDecodeError:
        return
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.flags.c_contiguous


def test_fuzz_webp_exif_rational_holding_a_string_is_refused_or_decoded() -> None:
    _decodes_or_refuses((CASES / "exception-54f5e5947f6a.webp").read_bytes())
    # the orientation is still applied: orientation 8 turns the stored pixels a quarter turn
    raw = np.asarray(Image.open(CASES / "exception-54f5e5947f6a.webp").convert("RGB"))
    assert decode_image((CASES / "exception-54f5e5947f6a.webp").read_bytes()).shape[:2] == raw.shape[1::-1]


def test_fuzz_webp_exif_integer_tag_holding_a_non_integer_is_refused_or_decoded() -> None:
    _decodes_or_refuses((CASES / "exception-78edf818a96b.webp").read_bytes())


def test_fuzz_log_after_beyond_sqlite_integer_is_a_client_error(tmp_path: Path) -> None:
    import json

    import httpx

    from facelens.server import ServerSettings

    from ._service import LiveService, make_key

    case = json.loads((CASES / "api-log-after-overflow.json").read_text())
    token = make_key(tmp_path, name="fuzz-regression", admin=True)
    service = LiveService(ServerSettings(home=tmp_path, workers=1, rate_limit=0))
    try:
        r = httpx.request(case["method"], f"{service.url}{case['path']}", params=case["query"],
                          headers={"Authorization": f"Bearer {token}"}, timeout=60)
    finally:
        service.stop()
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("invalid_request", "invalid_argument")


# -- a property test in the normal run: hypothesis draws the fuzzer's mutations -------------------------
# benchmarks/fuzz_decode.py runs the long, crash-proof version (each case in a worker process, so a segfault
# or a hang is a finding, not the end of the run); here hypothesis drives the same mutators in-process for a
# bounded number of cases, and shrinks whatever breaks the promise to a minimal sequence of mutations.

def test_fuzz_any_mutation_of_a_valid_image_decodes_or_is_refused() -> None:
    import random

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from benchmarks.fuzz_decode import make_case, make_seeds

    seeds = make_seeds()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.randoms(use_true_random=False))
    def decodes_or_refuses(rng: random.Random) -> None:
        _, data, applied = make_case(rng, seeds)
        try:
            arr = decode_image(data, max_pixels=2_000_000)  # huge headers are refused, not decoded for seconds
        except ImageDecodeError:
            return
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.flags.c_contiguous, applied

    decodes_or_refuses()
