"""The README's main job: compare every pair of a folder of portraits and show what was decided."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .engine import Engine
from .errors import InvalidArgumentError, NoFaceError

__all__ = ["run_demo"]

_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def run_demo(engine: Engine, folder: Path, *, max_fmr: float | None = None,
             say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Analyse each image of ``folder`` once, then compare every pair with :meth:`Engine.compare_faces`.

    A file named ``ID_x.ext`` belongs to person ``ID``. Returns counts of true/false matches and
    non-matches plus every pair's score and false-match rate; ``say`` receives human-readable lines.
    """
    out = say or (lambda _line: None)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _EXTENSIONS)
    if len(files) < 2:
        raise InvalidArgumentError(f"{folder}: the demo needs at least two portraits named ID_x.jpg, "
                                   f"found {len(files)}")
    faces = {}
    for p in files:
        found = engine.analyze(str(p), max_faces=1)
        if not found:
            raise NoFaceError("no face found in a demo portrait", source=str(p))
        faces[p] = found[0]
    threshold = engine.threshold(max_fmr)
    out(f"{len(files)} portraits, model {engine.model_name}, calibration {engine.calibration.name}")
    out(f"decision point: false-match rate <= {max_fmr or engine.config.max_fmr:g} "
        f"(score >= {threshold:.4f})\n")
    pairs: list[dict[str, Any]] = []
    tally = {"true_match": 0, "false_non_match": 0, "true_non_match": 0, "false_match": 0}
    for a, b in itertools.combinations(files, 2):
        same = a.stem.rsplit("_", 1)[0] == b.stem.rsplit("_", 1)[0]
        r = engine.compare_faces(faces[a], faces[b], max_fmr=max_fmr)
        key = ("true_match" if r.match else "false_non_match") if same else (
            "false_match" if r.match else "true_non_match")
        tally[key] += 1
        pairs.append({"a": a.name, "b": b.name, "same_person": same, "score": round(r.score, 6),
                      "fmr": r.fmr, "fmr_extrapolated": r.fmr_extrapolated, "match": r.match})
        if same or r.match:
            rate = f"{r.fmr:.1e}{' (extrapolated)' if r.fmr_extrapolated else ''}"
            verdict = "MATCH   " if r.match else "no match"
            note = "" if same == r.match else "   <-- wrong"
            out(f"  {verdict} {a.name} ~ {b.name}: score {r.score:.3f}, false-match rate {rate}"
                f" ({'same' if same else 'different'} person){note}")
    n_diff = tally["true_non_match"] + tally["false_match"]
    out(f"\nsame-person pairs matched: {tally['true_match']} of {tally['true_match'] + tally['false_non_match']}")
    out(f"different-person pairs wrongly matched: {tally['false_match']} of {n_diff}")
    top = max((p for p in pairs if not p["same_person"]), key=lambda p: float(p["score"]), default=None)
    if top is not None:
        out(f"closest two different people: {top['a']} ~ {top['b']}, score {top['score']:.3f}, "
            f"false-match rate {top['fmr']:.1e}")
    search = _search_demo(engine, files, max_fmr=max_fmr, say=out)
    return {"model": engine.model_name, "calibration": engine.calibration.name, "threshold": threshold,
            "max_fmr": max_fmr or engine.config.max_fmr, "counts": tally, "pairs": pairs, "search": search}


def _search_demo(engine: Engine, files: list[Path], *, max_fmr: float | None,
                 say: Callable[[str], None]) -> dict[str, Any]:
    """Index each person's first photo into a collection, then search it with every other photo."""
    people: dict[str, list[Path]] = {}
    for p in files:
        people.setdefault(p.stem.rsplit("_", 1)[0], []).append(p)
    gallery = {person: photos[0] for person, photos in people.items()}
    probes = [(person, p) for person, photos in people.items() for p in photos[1:]]
    name = "facelens-demo"
    if name in engine.list_collections():
        engine.delete_collection(name)
    engine.create_collection(name)
    try:
        for person, photo in gallery.items():
            engine.index_faces(name, str(photo), external_image_id=photo.name, person_id=person)
        say(f"\ncollection {name!r}: {len(gallery)} faces, one photo per person; searching it with the "
            f"{len(probes)} other photos")
        op = engine.operating_point(max_fmr=max_fmr, collection_size=len(gallery))
        if op.max_fpir is not None:
            say(f"decision point: a search for someone not in the collection returns anyone at most "
                f"{op.max_fpir:g} of the time; with {len(gallery)} faces that is a false-match rate <= "
                f"{op.max_fmr:.1e} per comparison (score >= {op.threshold:.4f})")
        rows: list[dict[str, Any]] = []
        for person, photo in probes:
            [result] = engine.search_faces_by_image(name, str(photo), max_fmr=max_fmr)
            top = result.matches[0] if result.matches else None
            correct = top is not None and top.person_id == person
            rows.append({"probe": photo.name, "person": person, "found": top.person_id if top else None,
                         "score": round(top.score, 6) if top else None, "fmr": top.fmr if top else None,
                         "matches": len(result.matches), "correct": correct})
            if top is None:
                say(f"  {photo.name}: no match (wrong: {person} is in the collection)")
            else:
                rate = f"{top.fmr:.1e}{' (extrapolated)' if top.fmr_extrapolated else ''}"
                say(f"  {photo.name}: {top.external_image_id} (person {top.person_id}), score {top.score:.3f}, "
                    f"false-match rate {rate}, {len(result.matches)} match(es){'' if correct else '  <-- wrong'}")
        found = sum(bool(r["correct"]) for r in rows)
        say(f"searches that found the right person first: {found} of {len(rows)}")
        return {"collection_size": len(gallery), "searches": rows, "correct": found}
    finally:
        engine.delete_collection(name)
