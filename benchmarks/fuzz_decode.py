"""Mutation fuzzing of ``facelens.imageio.decode_image`` with malformed JPEG/PNG/WebP/GIF/TIFF/BMP bytes.

Seeds are small valid images of each format made here with Pillow (several modes and encodings per format,
some with EXIF). Each case is one seed put through one to three mutations: bit flips, interesting-byte
writes, truncation, splicing a slice of another seed (or of itself) in, deleting or repeating a chunk or
marker, a huge or zero width/height written into the format's header (checksums fixed where the format
has them, so the header is believed), EXIF garbage, and decompression-bomb headers (a valid zlib stream
of zeros behind a huge PNG header, a huge GIF/BMP canvas).

Allowed outcomes for one input: a C-contiguous ``(H, W, 3)`` uint8 array, or ``ImageDecodeError`` (of
which ``ImageTooLargeError`` is a subclass). Anything else is a finding:

* ``exception``: another exception escaped (``InvalidArgumentError`` included: the input is bytes);
* ``bad_output``: the array has another shape, dtype or layout;
* ``slow``: one input took more than ``--max-seconds`` (2 s);
* ``memory``: one input raised the worker's peak RSS by more than ``--max-mb`` (1 GB), or ran out of the
  worker's address-space limit (MemoryError);
* ``hang``: no answer within ``--hang-seconds``; the worker is killed;
* ``crash``: the worker died (a signal such as SIGSEGV, or an abort): a hard crash in a C decoder.

Cases run in a child worker process (``--worker``, fed over a pipe), so a hard crash or hang costs a
restart, not the run; the parent keeps the bytes of the case in flight and saves every new finding to
``benchmarks/fuzz_cases/`` (``<kind>-<sha256 prefix>.<ext>``). ``--in-process`` decodes in this process
instead (for debugging under a debugger; a crash then ends the run). A summary is printed and written
to ``benchmarks/results/fuzz_decode.json``.

    python benchmarks/fuzz_decode.py --seconds 300 [--seed 1]
    python benchmarks/fuzz_decode.py --replay benchmarks/fuzz_cases/exception-0123abcd.jpg
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import time
import traceback
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import PIL  # noqa: E402
from PIL import Image  # noqa: E402

CASES_DIR = ROOT / "benchmarks" / "fuzz_cases"
RESULTS = ROOT / "benchmarks" / "results" / "fuzz_decode.json"

WORKER_MEMORY_LIMIT = 3 * 1024**3  # address space of the worker: a real bomb fails there, not on the host
MAX_PIXELS = 40_000_000  # decode_image's default; cases run with it


# --------------------------------------------------------------------------- seeds


def _gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None]
    rgb = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                    np.broadcast_to((x + y) / 2, (height, width))], axis=2)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "fuzz"  # Make
    return exif.tobytes()


def make_seeds() -> dict[str, bytes]:
    """Small valid images, keyed ``<format>-<variant>``; the key's first part is the file extension."""
    base = _gradient(24, 16)
    seeds: dict[str, bytes] = {}

    def save(key: str, img: Image.Image, fmt: str, **kw: Any) -> None:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        seeds[key] = buf.getvalue()

    save("jpg-baseline", base, "JPEG", quality=80)
    save("jpg-progressive", base, "JPEG", quality=60, progressive=True)
    save("jpg-exif6", base, "JPEG", exif=_exif(6))
    save("jpg-grey", base.convert("L"), "JPEG")
    save("jpg-cmyk", base.convert("CMYK"), "JPEG")
    save("png-rgb", base, "PNG")
    save("png-rgba", base.convert("RGBA"), "PNG")
    save("png-palette", base.convert("P"), "PNG", transparency=3)
    save("png-interlaced", base, "PNG", interlace=1)
    save("png-i16", Image.fromarray(np.arange(24 * 16, dtype=np.uint16).reshape(16, 24) * 150), "PNG")
    save("png-exif", base, "PNG", exif=_exif(3))
    save("webp-lossy", base, "WEBP", quality=50)
    save("webp-lossless", base.convert("RGBA"), "WEBP", lossless=True)
    save("webp-exif", base, "WEBP", exif=_exif(8))
    frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    save("gif-anim", frames[0].convert("P"), "GIF", save_all=True, append_images=[frames[1].convert("P")], loop=0)
    save("gif-still", base.convert("P"), "GIF", transparency=0)
    save("tif-raw", base, "TIFF")
    save("tif-lzw", base, "TIFF", compression="tiff_lzw")
    save("tif-deflate", base.convert("RGBA"), "TIFF", compression="tiff_adobe_deflate")
    save("tif-f32", Image.fromarray(np.linspace(-5, 900, 24 * 16, dtype=np.float32).reshape(16, 24)), "TIFF")
    save("bmp-rgb", base, "BMP")
    save("bmp-1bit", base.convert("1"), "BMP")
    return seeds


# --------------------------------------------------------------------------- mutations

INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]
HUGE = [0xFFFF, 0x7FFF, 0x8000, 65500, 46341, 0]  # 46341^2 just overflows a signed 32-bit pixel count
HUGE32 = [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x10000, 100_000, 0]


def _bitflip(data: bytearray, rng: random.Random, _seeds: list[bytes]) -> str:
    n = rng.choice([1, 1, 2, 4, 8, 16])
    for _ in range(n):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return f"bitflip x{n}"


def _interesting(data: bytearray, rng: random.Random, _seeds: list[bytes]) -> str:
    n = rng.choice([1, 2, 4])
    for _ in range(n):
        data[rng.randrange(len(data))] = rng.choice(INTERESTING)
    return f"interesting-bytes x{n}"


def _truncate(data: bytearray, rng: random.Random, _seeds: list[bytes]) -> str:
    cut = rng.choice([rng.randrange(len(data)), len(data) - rng.randrange(1, 17), rng.randrange(min(64, len(data)))])
    cut = max(0, cut)
    del data[cut:]
    return f"truncate to {cut}"


def _splice(data: bytearray, rng: random.Random, seeds: list[bytes]) -> str:
    other = rng.choice(seeds)
    a = rng.randrange(len(other))
    b = min(len(other), a + rng.randrange(1, 512))
    at = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        data[at:at] = other[a:b]
        return f"splice insert {b - a}B at {at}"
    data[at:at + (b - a)] = other[a:b]
    return f"splice overwrite {b - a}B at {at}"


def _chunk_ops(data: bytearray, rng: random.Random, _seeds: list[bytes]) -> str:
    """Delete, repeat or swap one structural unit: a JPEG marker segment or a PNG/RIFF chunk, else a range."""
    spans = _structure(bytes(data))
    if not spans:
        a = rng.randrange(len(data))
        b = min(len(data), a + rng.randrange(1, 128))
        spans = [(a, b)]
    a, b = rng.choice(spans)
    op = rng.choice(["delete", "repeat", "repeat", "move"])
    piece = bytes(data[a:b])
    if op == "delete":
        del data[a:b]
    elif op == "repeat":
        data[b:b] = piece * rng.choice([1, 2, 50])
    else:
        del data[a:b]
        at = rng.randrange(len(data) + 1)
        data[at:at] = piece
    return f"chunk {op} [{a}:{b}]"


def _structure(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the structural units of a JPEG (marker segments) or PNG / RIFF (chunks)."""
    spans: list[tuple[int, int]] = []
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(data) and data[i] == 0xFF:
            marker = data[i + 1]
            if marker in (0xD9, 0xDA):  # EOI, or SOS: entropy-coded data follows
                spans.append((i, len(data)))
                break
            length = struct.unpack(">H", data[i + 2:i + 4])[0]
            spans.append((i, min(len(data), i + 2 + length)))
            i += 2 + length
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        i = 8
        while i + 8 <= len(data):
            length = struct.unpack(">I", data[i:i + 4])[0]
            spans.append((i, min(len(data), i + 12 + length)))
            i += 12 + length
    elif data[:4] == b"RIFF":
        i = 12
        while i + 8 <= len(data):
            length = struct.unpack("<I", data[i + 4:i + 8])[0]
            spans.append((i, min(len(data), i + 8 + length + (length & 1))))
            i += 8 + length + (length & 1)
    return spans


def _png_fix_crcs(data: bytearray) -> None:
    i = 8
    while i + 12 <= len(data):
        length = struct.unpack(">I", data[i:i + 4])[0]
        end = i + 8 + length
        if end + 4 > len(data):
            break
        data[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(data[i + 4:end])) & 0xFFFFFFFF)
        i = end + 4


def _dimensions(data: bytearray, rng: random.Random, _seeds: list[bytes]) -> str:
    """Write a huge, zero or overflowing width and/or height where the format's header keeps them."""
    w16, h16 = rng.choice(HUGE), rng.choice(HUGE)
    w32, h32 = rng.choice(HUGE32), rng.choice(HUGE32)
    if data[:2] == b"\xff\xd8":
        for a, _b in _structure(bytes(data)):
            if data[a + 1] in (0xC0, 0xC1, 0xC2) and a + 9 <= len(data):
                data[a + 5:a + 9] = struct.pack(">HH", h16, w16)
                return f"jpeg SOF {w16}x{h16}"
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        data[16:24] = struct.pack(">II", w32, h32)
        _png_fix_crcs(data)
        return f"png IHDR {w32}x{h32}"
    elif data[:3] == b"GIF" and len(data) >= 10:
        data[6:10] = struct.pack("<HH", w16, h16)
        if rng.random() < 0.5:  # the first image descriptor too
            j = data.find(b"\x2c", 13)
            if j > 0 and j + 9 <= len(data):
                data[j + 5:j + 9] = struct.pack("<HH", w16, h16)
        return f"gif screen {w16}x{h16}"
    elif data[:2] == b"BM" and len(data) >= 26:
        data[18:26] = struct.pack("<ii", rng.choice([w32 & 0x7FFFFFFF, -1, 0]), rng.choice([h32 & 0x7FFFFFFF, -h16]))
        return "bmp header size"
    elif bytes(data[:4]) in (b"II*\x00", b"MM\x00*") and len(data) >= 8:
        fmt = "<" if data[:2] == b"II" else ">"
        ifd = struct.unpack(fmt + "I", data[4:8])[0]
        if ifd + 2 <= len(data):
            n = struct.unpack(fmt + "H", data[ifd:ifd + 2])[0]
            for k in range(n):
                e = ifd + 2 + 12 * k
                if e + 12 > len(data):
                    break
                tag, typ = struct.unpack(fmt + "HH", data[e:e + 4])
                if tag in (256, 257):  # ImageWidth, ImageLength
                    value = w32 if tag == 256 else h32
                    if typ == 3:
                        data[e + 8:e + 12] = struct.pack(fmt + "HH", value & 0xFFFF, 0)
                    else:
                        data[e + 8:e + 12] = struct.pack(fmt + "I", value)
            return f"tiff tags {w32}x{h32}"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        j = data.find(b"VP8X")
        if j > 0 and j + 18 <= len(data):
            w24, h24 = rng.choice([0xFFFFFF, 0, 40000]), rng.choice([0xFFFFFF, 0, 40000])
            data[j + 12:j + 18] = w24.to_bytes(3, "little") + h24.to_bytes(3, "little")
            return f"webp VP8X canvas {w24 + 1}x{h24 + 1}"
        j = data.find(b"VP8 ")
        if j > 0 and j + 20 <= len(data):
            data[j + 16:j + 20] = struct.pack("<HH", w16 & 0x3FFF, h16 & 0x3FFF)
            return f"webp VP8 {w16 & 0x3FFF}x{h16 & 0x3FFF}"
    return _bitflip(data, rng, _seeds)


def _exif_garbage(data: bytearray, rng: random.Random, seeds: list[bytes]) -> str:
    """An EXIF block that is random, or a real one with random bytes in it, put where readers look for it."""
    body = bytearray(b"Exif\x00\x00" + _exif(rng.randrange(0, 70000) & 0xFFFF))
    for _ in range(rng.randrange(1, 12)):
        body[rng.randrange(6, len(body))] = rng.randrange(256)
    if rng.random() < 0.3:
        body = bytearray(b"Exif\x00\x00" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))))
    if data[:2] == b"\xff\xd8":
        seg = b"\xff\xe1" + struct.pack(">H", min(0xFFFF, len(body) + 2)) + bytes(body)
        data[2:2] = seg
        return f"jpeg APP1 exif garbage {len(body)}B"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        chunk_body = bytes(body[6:])
        chunk = struct.pack(">I", len(chunk_body)) + b"eXIf" + chunk_body
        chunk += struct.pack(">I", zlib.crc32(chunk[4:]) & 0xFFFFFFFF)
        data[33:33] = chunk  # right after IHDR
        return f"png eXIf garbage {len(chunk_body)}B"
    if data[:4] == b"RIFF" and data.find(b"EXIF") > 0:
        j = data.find(b"EXIF")
        length = struct.unpack("<I", data[j + 4:j + 8])[0]
        for _ in range(rng.randrange(1, 12)):
            data[j + 8 + rng.randrange(max(1, length))] = rng.randrange(256)
        return "webp EXIF chunk garbage"
    return _bitflip(data, rng, seeds)


def _bomb(data: bytearray, rng: random.Random, _seeds: list[bytes]) -> str:
    """Replace the case by a decompression-bomb file: a small file whose header claims many pixels."""
    kind = rng.choice(["png", "png-under", "gif", "bmp", "tiff"])
    if kind.startswith("png"):
        # Under the 40 MP limit but big (6000x6000 RGB = 108 MB), or far over it; the IDAT is a valid
        # zlib stream of a few rows of zeros, so the header check is what has to refuse it.
        side = 6000 if kind == "png-under" else rng.choice([20000, 65535, 100_000])
        raw = zlib.compress(b"\x00" * (1 + 3 * side) * rng.choice([1, 64]), 9)
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
        out = b"\x89PNG\r\n\x1a\n"
        for tag, body in ((b"IHDR", ihdr), (b"IDAT", raw), (b"IEND", b"")):
            out += struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
        data[:] = out
        return f"bomb png {side}x{side}"
    if kind == "gif":
        side = rng.choice([6000, 30000, 65535])
        out = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0) + b"\x02\x02\x44\x01\x00\x3b"
        data[:] = out
        return f"bomb gif {side}x{side}"
    if kind == "bmp":
        w, h = rng.choice([(30000, 30000), (6000, 6000), (1, 2**31 - 1)])
        header = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54)
        info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
        data[:] = header + info + b"\x00" * 64
        return f"bomb bmp {w}x{h}"
    w, h = rng.choice([(40000, 40000), (6000, 6000), (1, 2**31)])
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, w * h & 0xFFFFFFFF)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) if e[1] == 4
                                                     else struct.pack("<HHIHH", e[0], e[1], e[2], e[3], 0)
                                                     for e in entries) + b"\x00\x00\x00\x00"
    data[:] = b"II*\x00" + struct.pack("<I", 8 + 64) + b"\x00" * 64 + ifd
    return f"bomb tiff {w}x{h}"


def _zero(data: bytearray, rng: random.Random, _seeds: list[bytes]) -> str:
    """Zero-size inputs: nothing, or only the format's magic bytes."""
    keep = rng.choice([0, 1, 2, 4, 8, 12])
    del data[keep:]
    return f"only {keep} bytes"


MUTATORS: list[tuple[Callable[[bytearray, random.Random, list[bytes]], str], int]] = [
    (_bitflip, 30), (_interesting, 15), (_truncate, 12), (_splice, 12), (_chunk_ops, 12),
    (_dimensions, 10), (_exif_garbage, 6), (_bomb, 2), (_zero, 1),
]


def make_case(rng: random.Random, seeds: dict[str, bytes]) -> tuple[str, bytes, list[str]]:
    """One fuzz case: (seed key, mutated bytes, the mutations applied, in order)."""
    key = rng.choice(sorted(seeds))
    data = bytearray(seeds[key])
    pool = list(seeds.values())
    applied: list[str] = []
    funcs, weights = zip(*MUTATORS, strict=True)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if not data:
            break
        mutate = rng.choices(funcs, weights=weights)[0]
        try:
            applied.append(mutate(data, rng, pool))
        except (struct.error, IndexError, ValueError, OverflowError) as exc:  # a header too short to edit
            applied.append(f"{mutate.__name__} skipped ({type(exc).__name__})")
    return key, bytes(data), applied


# --------------------------------------------------------------------------- running one case


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_one(data: bytes) -> dict[str, Any]:
    """Decode ``data`` in this process; return the outcome (``ok`` or the exception), seconds and peak-RSS rise."""
    from facelens.errors import ImageDecodeError
    from facelens.imageio import decode_image

    before = _rss_mb()
    t0 = time.perf_counter()
    result: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            arr = decode_image(data)
        except ImageDecodeError as exc:
            result = {"outcome": type(exc).__name__}
        except MemoryError:
            result = {"outcome": "MemoryError", "traceback": traceback.format_exc(limit=-8)}
        except Exception as exc:  # the point of fuzzing: anything else is a finding
            result = {"outcome": "exception", "error": f"{type(exc).__name__}: {exc}"[:500],
                      "traceback": traceback.format_exc(limit=-8), "where": _where(exc)}
        else:
            ok = (isinstance(arr, np.ndarray) and arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8
                  and arr.flags.c_contiguous and arr.shape[0] > 0 and arr.shape[1] > 0)
            result = {"outcome": "ok" if ok else "bad_output",
                      "shape": list(arr.shape) if isinstance(arr, np.ndarray) else None}
            del arr
    result["seconds"] = time.perf_counter() - t0
    result["rss_rise_mb"] = _rss_mb() - before
    result["warnings"] = sorted({w.category.__name__ for w in caught})
    return result


def _where(exc: BaseException) -> str:
    """file:line:function of the innermost frame, to group findings by where they happen."""
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return "?"
    f = tb[-1]
    return f"{Path(f.filename).name}:{f.lineno}:{f.name}"


def worker() -> None:
    """Child loop: read length-prefixed cases from stdin, answer one JSON line per case on stdout."""
    import faulthandler
    import logging

    faulthandler.enable()  # a hard crash prints the Python stack to stderr (kept by the parent)
    logging.getLogger().addHandler(logging.NullHandler())  # facelens logs ignored EXIF at WARNING: expected here
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_LIMIT, WORKER_MEMORY_LIMIT))
    import facelens.imageio  # noqa: F401  (import cost out of the first case's time)

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b'{"ready": true}\n')
    stdout.flush()
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        (n,) = struct.unpack("<I", head)
        data = stdin.read(n)
        stdout.write(json.dumps(run_one(data)).encode() + b"\n")
        stdout.flush()


class Worker:
    """A ``--worker`` child; ``run`` returns its answer, or a crash/hang outcome after which it is restarted."""

    def __init__(self, hang_seconds: float) -> None:
        self.hang_seconds = hang_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.stderr_path = Path(f"/tmp/fuzz_decode_worker_{os.getpid()}.stderr")

    def _start(self) -> subprocess.Popen[bytes]:
        # The worker's stderr (libtiff's messages, a crash's stack) goes to a file, read back after a crash.
        with open(self.stderr_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(b'{"ready"'):
            raise RuntimeError(f"fuzz worker did not start (exit {proc.wait()})")
        return proc

    def run(self, data: bytes) -> dict[str, Any]:
        if self.proc is None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        t0 = time.perf_counter()
        try:
            proc.stdin.write(struct.pack("<I", len(data)) + data)
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout=self.hang_seconds)
        if not ready:
            proc.kill()
            proc.wait()
            self._drop()
            return {"outcome": "hang", "seconds": time.perf_counter() - t0}
        line = proc.stdout.readline()
        if not line:
            rc = proc.wait()
            self._drop()
            how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
            tail = self.stderr_path.read_bytes()[-3000:].decode("utf-8", "replace")
            return {"outcome": "crash", "error": f"worker died: {how}", "seconds": time.perf_counter() - t0,
                    "stderr_tail": tail}
        result: dict[str, Any] = json.loads(line)
        if result["outcome"] == "MemoryError" or result["rss_rise_mb"] > 200:
            # The peak RSS only rises, so after a big case the next ones cannot be measured: restart.
            self.close()
        return result

    def _drop(self) -> None:
        self.proc = None
        self.restarts += 1

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.restarts += 1
        self.stderr_path.unlink(missing_ok=True)


@dataclass
class Findings:
    """Findings grouped by (kind, signature); the first input of each group is saved."""

    max_seconds: float
    max_mb: float
    cases_dir: Path
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_kind: Counter[str] = field(default_factory=Counter)

    def judge(self, result: dict[str, Any]) -> tuple[str, str] | None:
        """(kind, signature) when ``result`` is a finding, else None."""
        outcome = result["outcome"]
        if outcome in ("exception", "bad_output", "crash", "hang"):
            detail = result.get("where") or result.get("error") or str(result.get("shape"))
            return outcome, f"{outcome}|{result.get('error', '').split(':')[0]}|{detail}"
        if outcome == "MemoryError" or result.get("rss_rise_mb", 0) > self.max_mb:
            return "memory", "memory"
        if result["seconds"] > self.max_seconds:
            return "slow", f"slow|{result['outcome']}"
        return None

    def add(self, kind: str, signature: str, result: dict[str, Any], case: dict[str, Any], data: bytes) -> None:
        self.by_kind[kind] += 1
        group = self.groups.get(signature)
        if group is None:
            digest = hashlib.sha256(data).hexdigest()[:12]
            path = self.cases_dir / f"{kind}-{digest}.{_ext(data, case['seed'].split('-')[0])}"
            self.cases_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            group = {"kind": kind, "signature": signature, "count": 0, "first_case": _show(path),
                     "seed": case["seed"], "mutations": case["mutations"], "result": result}
            self.groups[signature] = group
            print(f"  NEW {kind}: {signature}  -> {group['first_case']}", flush=True)
        group["count"] += 1


def _ext(data: bytes, fallback: str) -> str:
    """File extension for ``data`` by its magic bytes (a bomb mutation changes the format)."""
    for magic, ext in ((b"\xff\xd8", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp"),
                       (b"II*\x00", "tif"), (b"MM\x00*", "tif")):
        if data.startswith(magic):
            return ext
    return "webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else fallback


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def fuzz(args: argparse.Namespace) -> dict[str, Any]:
    seeds = make_seeds()
    rng = random.Random(args.seed)
    findings = Findings(max_seconds=args.max_seconds, max_mb=args.max_mb, cases_dir=args.cases_dir)
    outcomes: Counter[str] = Counter()
    per_seed: Counter[str] = Counter()
    slowest = 0.0
    worker_proc = None if args.in_process else Worker(args.hang_seconds)
    start = time.monotonic()
    cases = 0
    next_report = start + 30
    # every seed once unmutated first: they must decode
    queue = [(k, v, ["none"]) for k, v in sorted(seeds.items())]
    try:
        while time.monotonic() - start < args.seconds and (args.max_cases == 0 or cases < args.max_cases):
            key, data, applied = queue.pop() if queue else make_case(rng, seeds)
            result = worker_proc.run(data) if worker_proc else run_one(data)
            cases += 1
            outcomes[result["outcome"]] += 1
            per_seed[key.split("-")[0]] += 1
            slowest = max(slowest, result["seconds"])
            verdict = findings.judge(result)
            if applied == ["none"] and result["outcome"] != "ok":
                verdict = verdict or ("seed_failed", f"seed_failed|{key}|{result['outcome']}")
            if verdict:
                findings.add(*verdict, result, {"seed": key, "mutations": applied}, data)
            if time.monotonic() > next_report:
                next_report += 30
                print(f"  {cases} cases, {time.monotonic() - start:.0f} s, outcomes {dict(outcomes)}", flush=True)
    finally:
        if worker_proc:
            worker_proc.close()
    elapsed = time.monotonic() - start
    return {
        "cases": cases, "seconds": round(elapsed, 1), "cases_per_second": round(cases / elapsed, 1),
        "seed": args.seed, "mode": "in-process" if args.in_process else "worker subprocess",
        "limits": {"max_seconds": args.max_seconds, "max_mb": args.max_mb, "hang_seconds": args.hang_seconds,
                   "worker_address_space_gb": WORKER_MEMORY_LIMIT / 1024**3, "max_pixels": MAX_PIXELS},
        "seeds": sorted(seeds), "cases_by_format": dict(per_seed), "outcomes": dict(outcomes),
        "slowest_case_seconds": round(slowest, 3),
        "worker_restarts": worker_proc.restarts if worker_proc else 0,
        "findings_by_kind": dict(findings.by_kind), "findings": list(findings.groups.values()),
        "pillow": PIL.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to fuzz")
    parser.add_argument("--max-cases", type=int, default=0, help="stop after this many cases (0: no limit)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (a run is reproducible case by case)")
    parser.add_argument("--max-seconds", type=float, default=2.0, help="slower than this for one input: a finding")
    parser.add_argument("--max-mb", type=float, default=1024.0, help="more peak memory than this for one input")
    parser.add_argument("--hang-seconds", type=float, default=20.0, help="no answer after this: kill, a finding")
    parser.add_argument("--in-process", action="store_true", help="decode in this process, not in a worker")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--cases-dir", type=Path, default=CASES_DIR, help="where each new finding's input is saved")
    parser.add_argument("--replay", type=Path, nargs="+", help="decode these files (in a worker) and print outcomes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    if args.replay:
        w = Worker(args.hang_seconds)
        for path in args.replay:
            print(path, json.dumps(w.run(path.read_bytes()), indent=1))
        w.close()
        return
    print(f"fuzzing decode_image for {args.seconds:.0f} s (seed {args.seed})", flush=True)
    summary = fuzz(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{summary['cases']} cases in {summary['seconds']} s ({summary['cases_per_second']}/s); "
          f"outcomes {summary['outcomes']}; slowest {summary['slowest_case_seconds']} s")
    print(f"findings by kind: {summary['findings_by_kind'] or 'none'}")
    for g in summary["findings"]:
        print(f"  {g['kind']} x{g['count']}: {g['signature']}  ({g['first_case']}; {g['seed']} {g['mutations']})")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
