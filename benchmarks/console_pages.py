"""Server time of every console page on a 100,000-face collection (docs/console.md, "Performance").

Builds a collection of ``--faces`` stored faces (random unit vectors: the pages' cost does not depend on
what the vectors are) in ``--persons`` persons, through the engine's store, serves it with the real app
on 127.0.0.1, signs in, and reads each page ``--repeat`` times; the server's own time for each is its
``Server-Timing`` header (session, API calls and template; not the network). Prints one JSON line.

    python benchmarks/console_pages.py [--faces 100000] [--persons 25000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from facelens.engine import Engine  # noqa: E402
from facelens.server import ServerSettings  # noqa: E402
from facelens.store import FaceRecord  # noqa: E402
from tests._service import LiveService, make_key  # noqa: E402

PORTRAITS = ROOT / "examples" / "portraits"


def build(home: Path, faces: int, persons: int) -> float:
    t0 = time.perf_counter()
    engine = Engine(home=str(home), threads=1)
    engine.create_collection("big")
    store = engine._store("big")
    rng = np.random.default_rng(0)
    batch = 20_000
    for start in range(0, faces, batch):
        n = min(batch, faces - start)
        vecs = rng.standard_normal((n, engine.embedding_size)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        store.add_images([(f"img{start + i}", f"{start + i:064x}", f"p{(start + i) % persons:06d}",
                           [FaceRecord((10, 10, 110, 130), 0.9, {"face_size": 110.0}, v)])
                          for i, v in enumerate(vecs)])
        print(f"  {start + n:,} faces stored", file=sys.stderr)
    engine.close()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--persons", type=int, default=25_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        build_s = build(home, args.faces, args.persons)
        token = make_key(home, name="bench", admin=True)
        svc = LiveService(ServerSettings(home=home, workers=2, rate_limit=0, purpose_default="optional"))
        try:
            c = httpx.Client(base_url=svc.url, timeout=120, follow_redirects=False)
            page = c.get("/console/sign-in").text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            c.post("/console/sign-in", data={"csrf_token": csrf, "api_key": token})
            dash = c.get("/console/")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', dash.text).group(1)  # type: ignore[union-attr]
            probe = (PORTRAITS / "A000368_b.jpg").read_bytes()
            for _ in range(30):  # log entries for the log page and the dashboard's activity
                c.post("/console/search", data={"csrf_token": csrf, "collection": "big"},
                       files=[("image", ("p.jpg", probe, "image/jpeg"))])
            pages = {
                "dashboard": ("GET", "/console/", None),
                "collection (first page)": ("GET", "/console/c/big", None),
                "collection (page 1,000 of faces, page 400 of persons)":
                    ("GET", f"/console/c/big?faces_after={args.faces - 100}&persons_after=p019950", None),
                "search form": ("GET", "/console/search?collection=big", None),
                "search: identify (upload, detect, embed, search, log)": ("POST", "/console/search", "identify"),
                "search: investigate": ("POST", "/console/search", "investigate"),
                "detect form": ("GET", "/console/detect", None),
                "log (newest 50)": ("GET", "/console/log", None),
                "log filtered by action": ("GET", "/console/log?action=search_faces_by_image", None),
                "keys": ("GET", "/console/keys", None),
                "audit": ("GET", "/console/audit", None),
                "search rules of a collection (JSON, the search form's script)":
                    ("GET", "/console/c/big/search-rules.json", None),
                "transparency report (whole log)": ("GET", "/console/audit/transparency", None),
            }
            out: dict = {}
            api = httpx.Client(base_url=svc.url, timeout=120, headers={"Authorization": f"Bearer {token}"})
            api_ms = []
            for _ in range(args.repeat):  # the same investigation through the HTTP API, timed by the client
                t = time.perf_counter()
                r = api.post("/v1/collections/big/search/image", files={"image": probe},
                             data={"mode": "investigate"})
                api_ms.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, r.text
            api_ms.sort()
            out["API POST /v1/collections/big/search/image investigate (client time)"] = {
                "p50_ms": round(statistics.median(api_ms), 1),
                "p95_ms": round(api_ms[int(0.95 * (len(api_ms) - 1))], 1), "max_ms": round(api_ms[-1], 1)}
            for name, (method, path, mode) in pages.items():
                times = []
                for _ in range(args.repeat):
                    if method == "GET":
                        r = c.get(path)
                    else:
                        r = c.post(path, data={"csrf_token": csrf, "collection": "big", "mode": mode},
                                   files=[("image", ("p.jpg", probe, "image/jpeg"))])
                    if mode == "identify" and r.status_code == 422 and "rate" in r.text:
                        refused = re.findall(r"<strong>(.*?)</strong>", r.text, re.S)[0]
                        out.setdefault("notes", {})[name] = f"refused (422), as the API refuses it: {refused}"
                    else:
                        problem = re.findall(r"<strong>(.*?)</strong>", r.text, re.S)
                        assert r.status_code == 200, (name, r.status_code, problem)
                    times.append(float(r.headers["server-timing"].split("dur=")[1]))
                times.sort()
                out[name] = {"p50_ms": round(statistics.median(times), 1),
                             "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1), "max_ms": round(times[-1], 1)}
                print(f"{name}: {out[name]}", file=sys.stderr)
        finally:
            svc.stop()
    print(json.dumps({"faces": args.faces, "persons": args.persons, "repeat": args.repeat,
                      "build_s": round(build_s, 1), "pages": out}))


if __name__ == "__main__":
    main()
