"""Make the example transparency report of docs/transparency-example.png from a synthetic demo log.

A throwaway home gets two collections of the bundled portraits, searches by made-up officers' keys with
made-up purposes, review decisions, an erasure and rule changes, each run on the engine and recorded as
the engine records it; then the report of the day is written, and screenshotted when Chromium is there::

    python -m benchmarks.transparency_example OUT_DIR [--screenshot docs/transparency-example.png]

No real data: the portraits are the public-domain ones in examples/portraits, every name is invented.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import facelens
from facelens import Actor
from facelens.accountability.transparency import build_transparency, write_transparency
from facelens.engine import image_sha256
from facelens.errors import NoFaceError, error_status

PORTRAITS = Path(__file__).resolve().parents[1] / "examples" / "portraits"
PEOPLE = sorted({p.stem.rsplit("_", 1)[0] for p in PORTRAITS.glob("*.jpg")})
ADMIN = Actor.cli()
BURGLARY = Actor.for_key("k_7f3a21", "desk 4, burglary unit")
MISSING = Actor.for_key("k_91bc07", "desk 9, missing persons")
DOOR = Actor.for_key("k_d00r55", "front door, staff entrance")
REVIEWER = Actor.for_key("k_r00a19", "review team A")
_NOT_LOGGED = {"bbox", "external_image_id", "searched_face", "matches", "searched_face_id", "collection_size",
               "candidates", "mode", "notice", "meaning"}


def _photo(person: str, which: str) -> Path:
    return PORTRAITS / f"{person}_{which}.jpg"


def _blank() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (120, 120, 120)).save(buf, format="JPEG")
    return buf.getvalue()


def build(home: Path) -> None:
    """Write the demo's actions into ``home``'s signed log."""
    eng = facelens.Engine(home=str(home), threads=1)
    items: list[tuple[str, str]] = []  # (collection, review item)
    try:
        for name, policy in (("watchlist", {"purpose_required": True}), ("staff-door", {})):
            eng.create_collection(name, policy=policy)
            eng.record(ADMIN, {"action": "collection_created", "collection": name, "purpose": None,
                               "policy": eng.collection_policy(name).to_dict(), "lead_floor_fmr": eng.lead_floor(name),
                               "calibration": None})
        for name, people in (("watchlist", PEOPLE[:6]), ("staff-door", PEOPLE[4:])):
            for person in people:
                path = _photo(person, "a")
                result = eng.index_faces(name, path, person_id=person)
                eng.record(ADMIN, {"action": "faces_indexed", "collection": name, "purpose": None,
                                   "image_sha256": image_sha256(path), "person_id": person,
                                   "face_ids": [f["face_id"] for f in result.indexed], "refused": [],
                                   "already_indexed": result.already_indexed})

        def search(name: str, image: Any, actor: Actor, purpose: str | None, mode: str) -> None:
            error: dict[str, str] | None = None
            try:
                results = list(eng.search_faces_by_image(name, image, mode=mode))
            except NoFaceError as exc:
                results, error = [], {"code": error_status(exc)[1], "message": str(exc)}
            docs = [r.to_dict() for r in results]
            rec: dict[str, Any] = {  # the shape of docs/identification.md's search records
                "action": "search_faces_by_image", "search_id": uuid.uuid4().hex, "purpose": purpose,
                "collection": name, "mode": mode, "collection_size": docs[0]["collection_size"] if docs else None,
                "probe": {"image_sha256": image_sha256(image)}, "options": {"mode": mode},
                "operating_point": {k: v for k, v in docs[0].items() if k not in _NOT_LOGGED} if docs else None,
                "results": [{"candidates": [{k: v for k, v in m.items() if k not in _NOT_LOGGED}
                                            for m in d.get("matches", d.get("candidates", []))]} for d in docs]}
            if error is not None:
                rec["error"] = error
            if mode == "investigate":
                rec["review_items"] = [uuid.uuid4().hex for r in results for _ in r.candidates]
                items.extend((name, i) for i in rec["review_items"])
            eng.record(actor, rec)

        for person in PEOPLE[:4]:
            search("watchlist", _photo(person, "b"), BURGLARY, "case 2026-0173 (burglary, Elm Street)", "investigate")
        for person in PEOPLE[6:]:  # not in the watchlist: no lead at all, or strangers only
            search("watchlist", _photo(person, "b"), MISSING, "case 2026-0188 (missing person)", "investigate")
        search("watchlist", _blank(), BURGLARY, "case 2026-0173 (burglary, Elm Street)", "investigate")  # no face
        for person in PEOPLE[4:]:
            for _ in range(3):
                search("staff-door", _photo(person, "b"), DOOR, "door access", "identify")
        search("staff-door", _photo(PEOPLE[0], "b"), DOOR, "door access", "identify")  # not staff: no match
        eng.set_collection_policy("watchlist", {"retention_days": 14}, actor=ADMIN)
        eng.set_lead_floor("watchlist", 1e-4)
        eng.record(ADMIN, {"action": "lead_floor_changed", "collection": "watchlist", "purpose": None,
                           "before": 1e-3, "after": 1e-4})
        decisions = ["confirmed", "rejected", "confirmed"]
        for (name, item), decision in zip(items, decisions, strict=False):
            eng.record(REVIEWER, {"action": "review_decided", "collection": name, "purpose": None, "item_id": item,
                                  "search_id": None, "decision": decision, "face_id": None,
                                  "reason": "ears, hairline and a scar compared" if decision == "confirmed"
                                  else "different nose and chin"})
        ids = eng.delete_person("staff-door", PEOPLE[-1])  # a former employee's erasure request
        eng.record(ADMIN, {"action": "person_erased", "collection": "staff-door", "purpose": None,
                           "person_id": PEOPLE[-1], "face_ids": ids, "review_items_withdrawn": 0,
                           "receipt_id": uuid.uuid4().hex})
    finally:
        eng.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        build(home)
        today = dt.datetime.now(dt.UTC).date()
        report = build_transparency(home, today.isoformat(), (today + dt.timedelta(days=1)).isoformat())
    html_path, json_path = write_transparency(report, args.out)
    print(f"wrote {html_path} and {json_path}")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if args.screenshot is not None and browser:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={args.screenshot.resolve()}", "--window-size=1280,2000",
                        html_path.resolve().as_uri()], check=True, capture_output=True, timeout=120)
        print(f"wrote {args.screenshot}")


if __name__ == "__main__":
    main()
