"""The real faces of ../shared/data, embedded once (largest face, the audit's embedding cache), with the
identity labels the calibration and the FPIR check need: one label per person across data sets.

Used by build_calibration.py, fpir_check.py and congress_experiment.py. Identities across sets are
unified by a stated rule (:func:`unify_across_sets`): the listed overlaps
(``congress-past/lfw_name_overlap.csv``, ``benchmarks/data/congress_lfw_overlap_extra.csv``), and any LFW
identity whose first and last name match a member's surname and one of the member's given names or
nickname. Within LFW, the identity pairs of ``benchmarks/data/lfw_label_errors.csv`` share one label.
"""

from __future__ import annotations

import csv
import re
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facelens  # noqa: E402
from facelens.audit.dataset import EmbeddedDataset, embed_dataset, read_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("../shared/data")  # relative to the project root, as the embedding cache keys were made
LABEL_ERRORS = ROOT / "benchmarks" / "data" / "lfw_label_errors.csv"
OVERLAP_EXTRA = ROOT / "benchmarks" / "data" / "congress_lfw_overlap_extra.csv"
SETS = ("lfw", "congress-past", "congress-historical", "utkface-dev")
_SUFFIXES = {"jr", "sr", "ii", "iii", "iv"}


def embedded(engine: facelens.Engine, name: str) -> EmbeddedDataset:
    """One data set of ../shared/data embedded with ``engine`` (from the cache when it is there)."""
    cache = engine.home / "cache" / f"embeddings-{engine.model_name}.npz"
    cache.parent.mkdir(parents=True, exist_ok=True)
    t = time.time()
    ds = read_dataset(DATA / name)
    out = embed_dataset(engine, ds, workers=2, cache=cache)
    print(f"# {name}: {len(out):,} images, {int(out.found.sum()):,} with a face ({time.time() - t:.0f} s)",
          file=sys.stderr)
    return out


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def congress_name_keys(name: str) -> set[tuple[str, str]]:
    """(given name, surname) keys of a congress name such as ``"HAGEL, Charles Timothy (Chuck)"``:
    every given name and nickname with the surname, lower-case ASCII."""
    if "," not in name:
        return set()
    surname, given = name.split(",", 1)
    last = re.sub(r"[^a-z]", "", _ascii(surname.split()[-1] if surname.split() else ""))
    tokens = {re.sub(r"[^a-z]", "", t) for t in re.split(r"[\s()\",.]+", _ascii(given))}
    return {(t, last) for t in tokens if t and t not in _SUFFIXES and len(t) > 1}


def lfw_name_key(identity: str) -> tuple[str, str]:
    """(first name, last name) of an LFW identity such as ``"Chuck_Hagel"``, lower-case ASCII."""
    parts = [re.sub(r"[^a-z]", "", _ascii(p)) for p in identity.split("_")]
    parts = [p for p in parts if p and p not in _SUFFIXES]
    return (parts[0], parts[-1]) if parts else ("", "")


def lfw_label_merge(labels: npt.NDArray[np.str_]) -> npt.NDArray[np.str_]:
    """LFW identity labels in which each listed label-error identity pair shares one label."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for r in csv.DictReader(LABEL_ERRORS.open()):
        a, b = find(r["identity_a"]), find(r["identity_b"])
        if a != b:
            parent[b] = a
    return np.array([find(str(x)) for x in labels])


@dataclass(frozen=True)
class Pool:
    """Every real face with a face found: embeddings, one person label across sets, the set of each row,
    paths and the per-row group labels (LFW sex and race; empty elsewhere)."""

    embeddings: npt.NDArray[np.float32]
    labels: npt.NDArray[np.str_]
    sets: npt.NDArray[np.str_]
    paths: list[str]
    groups: dict[str, npt.NDArray[np.str_]]
    unified: list[tuple[str, str, str]]  # (congress label, LFW identity, why)
    lfw_central_changed: int = 0


def unify_across_sets(lfw_ids: set[str], members: dict[str, tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(congress label, LFW identity, rule) for each member that is also an LFW identity. ``members``:
    congress label -> (name, set)."""
    out: list[tuple[str, str, str]] = []
    listed: set[tuple[str, str]] = set()
    name_to_label = {name: label for label, (name, _) in members.items()}
    for row in csv.DictReader((ROOT.parent / "shared" / "data" / "congress-past" / "lfw_name_overlap.csv").open()):
        label = name_to_label.get(row["bioguide_name"])
        if label is not None and row["lfw_identity"] in lfw_ids:
            listed.add((label, row["lfw_identity"]))
    for row in csv.DictReader(OVERLAP_EXTRA.open()):
        for label in members:
            if label.endswith(":" + row["bioguide"]) and row["lfw_identity"] in lfw_ids:
                listed.add((label, row["lfw_identity"]))
    out += [(a, b, "listed") for a, b in sorted(listed)]
    by_key: dict[tuple[str, str], list[str]] = {}
    for ident in lfw_ids:
        by_key.setdefault(lfw_name_key(ident), []).append(ident)
    for label, (name, _) in sorted(members.items()):
        for key in congress_name_keys(name):
            for ident in by_key.get(key, []):
                if (label, ident) not in listed:
                    out.append((label, ident, "name match"))
    return out


CENTRAL_RECHECK_ABOVE = 0.45


def lfw_central_faces(engine: facelens.Engine, emb: npt.NDArray[np.float32], labels: npt.NDArray[np.str_],
                      paths: list[str]) -> tuple[npt.NDArray[np.float32], int, int]:
    """LFW's subject is the face nearest the image centre, not always the largest one (in a group photo
    the largest face may be another LFW person, which makes a false "impostor" pair). Every LFW image in
    an impostor pair scoring >= CENTRAL_RECHECK_ABOVE (and < 0.9) is analysed again and given its
    central face. Returns (embeddings, images re-checked, images whose face changed); cached by path."""
    from benchmarks.common import central_index

    rows: set[int] = set()
    for s0 in range(0, len(emb), 1024):
        s = emb[s0:s0 + 1024] @ emb.T
        r = np.arange(s0, min(s0 + 1024, len(emb)))[:, None]
        c = np.arange(len(emb))[None, :]
        hit = (c > r) & (labels[s0:s0 + 1024, None] != labels[None, :]) & (s >= CENTRAL_RECHECK_ABOVE) & (s < 0.9)
        for a, b in np.argwhere(hit):
            rows.update((s0 + int(a), int(b)))
    cache = ROOT / "benchmarks" / ".cache" / f"lfw_central_{engine.model_name}.npz"
    known: dict[str, npt.NDArray[np.float32]] = {}
    if cache.is_file():
        z = np.load(cache)
        known = {str(p): e for p, e in zip(z["paths"], z["embeddings"], strict=True)}
    out = emb.copy()
    changed = 0
    for i in sorted(rows):
        if paths[i] not in known:
            faces = engine.analyze(paths[i], quality_filter="NONE")
            if not faces:
                known[paths[i]] = emb[i]
                continue
            from PIL import Image

            with Image.open(paths[i]) as im:
                w, h = im.size
            known[paths[i]] = np.asarray(faces[central_index([f.bbox.as_list() for f in faces], w, h)].embedding,
                                         np.float32)
        if float(known[paths[i]] @ emb[i]) < 0.999:
            changed += 1
        out[i] = known[paths[i]]
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array(list(known)), embeddings=np.stack(list(known.values())))
    return out, len(rows), changed


def pool(engine: facelens.Engine, sets: tuple[str, ...] = ("lfw", "congress-past", "congress-historical")) -> Pool:
    """The rows of ``sets`` that have a face, labelled by person across sets (UTKFace rows, which have no
    identity labels, get one label per image); LFW images re-checked for their central face
    (:func:`lfw_central_faces`)."""
    embs, labels, set_of, paths = [], [], [], []
    groups: dict[str, list[str]] = {"sex": [], "race": []}
    members: dict[str, tuple[str, str]] = {}
    for name in sets:
        e = embedded(engine, name).usable()
        ds = e.dataset
        subj = ds.subjects.astype(str)
        vectors = e.embeddings
        if name == "lfw":
            lab = np.char.add("lfw:", lfw_label_merge(subj))
            vectors, checked, changed = lfw_central_faces(engine, vectors, lab, [str(p) for p in ds.paths])
            print(f"# lfw: {checked} images in impostor pairs >= {CENTRAL_RECHECK_ABOVE} re-checked, {changed} "
                  f"given their central face", file=sys.stderr)
        else:
            lab = np.char.add(f"{name}:", subj)
        if name.startswith("congress"):
            for s_, n_ in zip(lab, ds.attributes["name"], strict=True):
                members[str(s_)] = (str(n_), name)
        embs.append(vectors)
        labels.append(lab)
        set_of += [name] * len(e)
        paths += [str(p) for p in ds.paths]
        for col in groups:
            vals = ds.groups.get(col) if name == "lfw" else None
            groups[col] += [str(v) for v in vals] if vals is not None else [""] * len(e)
    all_labels = np.concatenate(labels)
    lfw_ids = {str(x)[4:] for x in all_labels if str(x).startswith("lfw:")}
    unified = unify_across_sets(lfw_ids, members)
    rename: dict[str, str] = {}
    for label, ident, _ in unified:
        rename[f"lfw:{ident}"] = label
    all_labels = np.array([rename.get(str(x), str(x)) for x in all_labels])
    return Pool(embeddings=np.concatenate(embs), labels=all_labels, sets=np.array(set_of), paths=paths,
                groups={k: np.array(v) for k, v in groups.items()}, unified=unified)
