"""Calibrate and audit: datasets in, a calibration profile or an audit report out.

These are the functions behind ``facelens calibrate``, ``facelens audit`` and ``facelens audit
false-matches``; each embeds its datasets with an :class:`~facelens.Engine` (cached, so a rerun does not
re-embed), measures with :mod:`facelens.audit.metrics`, and returns plain results.

Near-duplicates: two images of *different* subjects that score at least ``duplicates_above`` (default
0.9) are taken for the same photograph (or the same person filed twice: on data without identity
labels, such as UTKFace, there is no other way to tell) and set aside from every impostor count; how
many were set aside is reported. Pass 1.0 (or more) to keep every pair.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .. import __version__
from ..calibration import ScoreCalibration
from ..calibration.table import pairs_needed
from ..errors import InvalidArgumentError
from . import metrics
from .dataset import Dataset, EmbeddedDataset, embed_dataset
from .report import build_audit

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["DEFAULT_DUPLICATES_ABOVE", "Progress", "audit", "calibrate", "false_match_audit", "read_exclusions"]

log = logging.getLogger(__name__)

DEFAULT_DUPLICATES_ABOVE = 0.9
MIN_GROUP_PAIRS = 1000  # groups with fewer impostor pairs are left out of a profile (listed in its meta)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stage is e.g. ``"embed lfw"``."""


def _embed(engine: Engine, dataset: Dataset, *, workers: int, cache: Path | None,
           progress: Progress | None) -> EmbeddedDataset:
    cb = None if progress is None else (lambda done, total: progress(f"embed {dataset.name}", done, total))
    embedded = embed_dataset(engine, dataset, workers=workers, progress=cb, cache=cache)
    usable = embedded.usable()
    lost = len(embedded) - len(usable)
    if lost:
        log.info("%s: %d of %d images without a usable face are left out", dataset.name, lost, len(embedded))
    if len(usable) < 2:
        raise InvalidArgumentError(f"{dataset.name}: fewer than two images with a face; nothing to measure")
    return usable


def _model(engine: Engine) -> dict[str, Any]:
    return {"name": engine.model_name, "sha256": engine.model_sha256, "facelens_version": __version__}


def _dataset_dict(embedded: EmbeddedDataset, total: int) -> dict[str, Any]:
    ds = embedded.dataset
    summary = dict(ds.summary())
    summary.pop("root", None)
    summary["images_without_a_face"] = total - len(embedded)
    return {"name": ds.name, "description": ds.description, "summary": summary}


@dataclass(frozen=True, slots=True)
class _Measured:
    embedded: EmbeddedDataset
    hists: metrics.PairHistograms
    duplicates: metrics.NearDuplicates
    total_images: int


def _measure(engine: Engine, dataset: Dataset, *, workers: int, cache: Path | None, duplicates_above: float,
             progress: Progress | None) -> _Measured:
    embedded = _embed(engine, dataset, workers=workers, cache=cache, progress=progress)
    emb, subjects = embedded.embeddings, embedded.dataset.subjects
    dups = metrics.find_near_duplicates(emb, subjects, min_score=duplicates_above)
    cb = None if progress is None else (lambda done, total: progress("score pairs", done, total))
    hists = metrics.pair_histograms(emb, subjects, embedded.dataset.groups, exclude=dups.pairs, progress=cb)
    return _Measured(embedded, hists, dups, len(dataset))


def calibrate(engine: Engine, dataset: Dataset, *, name: str | None = None, workers: int = 2,
              cache: Path | None = None, duplicates_above: float = DEFAULT_DUPLICATES_ABOVE,
              min_group_pairs: int = MIN_GROUP_PAIRS, progress: Progress | None = None) -> ScoreCalibration:
    """Measure a calibration profile for ``engine``'s model on a labelled dataset.

    The overall curve holds every impostor pair (two images of different subjects); each label of each
    group column gets its own curve (``"<dataset>:<column>=<label>"``, both images carrying the label)
    when it has at least ``min_group_pairs`` impostor pairs. Save it with ``.save(path)`` and give it to a
    collection (``Engine.create_collection(..., calibration=path)``).
    """
    m = _measure(engine, dataset, workers=workers, cache=cache, duplicates_above=duplicates_above,
                 progress=progress)
    if m.hists.impostor.sum() == 0:
        raise InvalidArgumentError(f"{dataset.name}: no impostor pairs (the data must hold two or more subjects)")
    groups: dict[str, npt.NDArray[np.int64]] = {}
    left_out: dict[str, int] = {}
    for column, g in m.hists.groups.items():
        for label in g.labels:
            counts = g.impostor_of(label)
            key = f"{dataset.name}:{column}={label}"
            if counts.sum() >= min_group_pairs:
                groups[key] = counts
            else:
                left_out[key] = int(counts.sum())
    meta: dict[str, Any] = {
        "dataset": dataset.name,
        "description": dataset.description,
        "images": m.total_images,
        "images_used": len(m.embedded),
        "subjects": int(len(set(m.embedded.dataset.subjects.tolist()))),
        "genuine_pairs": int(m.hists.genuine.sum()),
        "set_aside": {"rule": f"pairs of different subjects scoring >= {duplicates_above:g} (taken for the same "
                              f"photo or the same person filed twice)",
                      "impostor_pairs": int(len(m.duplicates.scores))},
        "face_choice": "the largest face of each image",
        "facelens_version": __version__,
        "measured_on": dt.date.today().isoformat(),
    }
    if left_out:
        meta["groups_left_out"] = {"min_pairs": min_group_pairs, "pairs": left_out}
    profile = ScoreCalibration(name=name or f"{dataset.name}-{engine.model_name}", model_sha256=engine.model_sha256,
                               counts=m.hists.impostor, meta=meta, groups=groups)
    floor = profile.supported_floor
    profile.meta["supports_down_to_fmr"] = floor
    if floor > engine.config.max_fmr:
        warning = (f"TOO FEW PAIRS: {profile.n_pairs:,} impostor pairs support false-match rates down to {floor:.2g} "
                   f"only, not the compare default {engine.config.max_fmr:g} (that needs "
                   f"{pairs_needed(engine.config.max_fmr):,} pairs); thresholds for lower rates are refused, and "
                   f"a collection will not take this profile")
        profile.meta["warning"] = warning
        log.warning("%s: %s", profile.name, warning)
    return profile


def audit(engine: Engine, dataset: Dataset, *, max_fmr: float | None = None, workers: int = 2,
          cache: Path | None = None, duplicates_above: float = DEFAULT_DUPLICATES_ABOVE,
          progress: Progress | None = None) -> dict[str, Any]:
    """Audit ``engine`` on a labelled dataset at its operating point for ``max_fmr`` (default: the
    engine's, 1e-5, under its policy): verification (DET, TAR at FMR, LFW 10-fold accuracy when the
    dataset has its pairs), demographic differentials at that one threshold, and identification.

    Returns the audit dict that :func:`facelens.audit.report.write_report` renders.
    """
    op = engine.operating_point(max_fmr=max_fmr)
    m = _measure(engine, dataset, workers=workers, cache=cache, duplicates_above=duplicates_above,
                 progress=progress)
    emb = m.embedded.embeddings
    lfw = None
    pairs = m.embedded.dataset.pairs
    if pairs is not None and len(pairs):
        scores = np.einsum("ij,ij->i", emb[pairs.a], emb[pairs.b])
        lfw = metrics.lfw_accuracy(scores, pairs.same, pairs.fold)
    ver = metrics.verification(m.hists, op.threshold, lfw=lfw)
    diff = metrics.demographic_differentials(m.hists, op.threshold, op.max_fmr)
    ident = None
    if len(set(m.embedded.dataset.subjects.tolist())) < len(m.embedded):  # some subject has 2+ images
        ident = metrics.identification(emb, m.embedded.dataset.subjects, m.embedded.dataset.groups,
                                       threshold=op.threshold)
    return build_audit(
        model=_model(engine), dataset=_dataset_dict(m.embedded, m.total_images),
        operating_point={"threshold": op.threshold, "target_fmr": op.max_fmr, "policy": op.policy,
                         "extrapolated": op.extrapolated, "limited_by": op.limited_by,
                         "calibration": op.calibration},
        verification=ver, differentials=diff, identification=ident, near_duplicates=m.duplicates,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


def read_exclusions(path: str | Path) -> list[tuple[str, str]]:
    """Known overlaps between probes and gallery, from a CSV whose first two columns are a probe's
    subject id (or name) and a gallery subject id: such pairs are the same person, not false matches."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise InvalidArgumentError(f"{path}: cannot read the exclusion list ({exc.strerror})") from None
    if not rows or len(rows[0]) < 2:
        raise InvalidArgumentError(f"{path}: expected a header and two columns (probe, gallery subject)")
    return [(r[0].strip(), r[1].strip()) for r in rows[1:] if len(r) >= 2 and r[0].strip()]


def _probes_and_mates(embedded: EmbeddedDataset) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Each subject's first image is its probe; its second (if any) the genuine mate (zeros if none).
    For congress-past, photo "a" (the official 2014 portrait) is the probe and "b" the mate."""
    ds = embedded.dataset
    order = np.arange(len(ds))
    photo = ds.attributes.get("photo")
    if photo is not None:
        order = np.argsort(np.asarray(photo), kind="stable")  # "a" before "b"
    first: dict[str, int] = {}
    second: dict[str, int] = {}
    for i in order.tolist():
        s = str(ds.subjects[i])
        if s not in first:
            first[s] = i
        elif s not in second:
            second[s] = i
    probes = np.array(sorted(first.values()), dtype=np.int64)
    mates = np.zeros((len(probes), embedded.embeddings.shape[1]), np.float32)
    for k, i in enumerate(probes.tolist()):
        j = second.get(str(ds.subjects[i]))
        if j is not None:
            mates[k] = embedded.embeddings[j]
    return probes, mates


def false_match_audit(engine: Engine, probes: Dataset, galleries: Sequence[Dataset], *,
                      exclude: Sequence[tuple[str, str]] = (), workers: int = 2, cache: Path | None = None,
                      top_n: int = 24,
                      progress: Progress | None = None) -> dict[str, Any]:
    """The ACLU experiment: search each probe subject against a gallery of strangers and count how many
    get at least one (false) candidate, at several operating points including facelens's search default.

    ``probes``: one probe image per subject (its first; for congress-past the 2014 portrait) and, when the
    subject has a second image, that image as the genuine mate, to show what each operating point costs
    in missed matches. ``galleries``: datasets of other people, searched together; a gallery subject equal
    to a probe's subject, or listed with it in ``exclude`` (``(probe subject or name, gallery subject)``),
    is left out of that probe's search. The highest-scoring probe/stranger pairs are listed with their
    images so that a person can check them.
    """
    if not galleries:
        raise InvalidArgumentError("give at least one gallery dataset")
    p_emb = _embed(engine, probes, workers=workers, cache=cache, progress=progress)
    p_idx, mates = _probes_and_mates(p_emb)
    g_parts = [_embed(engine, g, workers=workers, cache=cache, progress=progress) for g in galleries]
    g_emb = np.concatenate([g.embeddings for g in g_parts])
    g_ids = np.concatenate([np.char.add(f"{g.dataset.name}:", g.dataset.subjects.astype(str)) for g in g_parts])
    g_paths = [str(p) for g in g_parts for p in g.dataset.paths]
    # exclusions name gallery subjects without the dataset prefix, and probes by id or name
    names = p_emb.dataset.attributes.get("name")
    by_name = {} if names is None else {str(n): str(s) for n, s in zip(names, p_emb.dataset.subjects, strict=True)}
    prefixed = [(by_name.get(a, a), f"{g.dataset.name}:{b}") for a, b in exclude for g in g_parts]
    n_gallery = len(g_emb)
    points: list[tuple[str, float, str]] = []
    for rate in (1e-3, 1e-4):
        points.append((f"max FMR {rate:g}", engine.operating_point(max_fmr=rate).threshold,
                       f"lax: about 1 in {round(1 / rate):,} comparisons of two different people match"))
    default_compare = engine.operating_point()
    points.append((f"compare default (max FMR {default_compare.max_fmr:g})", default_compare.threshold,
                   "the threshold facelens compare uses"))
    search = engine.operating_point(collection_size=n_gallery)
    points.append((f"search default (max FPIR {search.max_fpir:g})", search.threshold,
                   f"a search of these {n_gallery:,} faces for someone absent returns anyone at most "
                   f"{search.max_fpir:g} of the time (max FMR {search.max_fmr:.1e} per comparison"
                   f"{', extrapolated' if search.extrapolated else ''})"))
    points.sort(key=lambda p: p[1])
    result = metrics.false_match_experiment(
        p_emb.embeddings[p_idx], p_emb.dataset.subjects[p_idx],
        {k: v[p_idx] for k, v in p_emb.dataset.groups.items()}, g_emb, g_ids, points,
        mate_emb=mates, exclude=prefixed, top_n=top_n,
        probe_paths=[str(p_emb.dataset.paths[i]) for i in p_idx], gallery_paths=g_paths)
    cal = engine.calibration

    def point_at(n: int) -> tuple[float, float, bool]:
        op = engine.operating_point(collection_size=n)
        return op.threshold, op.max_fmr, op.extrapolated

    def estimate(score: float) -> float:  # the mixed population searched here: the overall curve's estimate
        return cal.overall.fmr_estimate(score)[0]

    sizes = [s for s in (1_000, 10_000) if s < n_gallery] + [n_gallery]
    check = metrics.fpir_check(
        p_emb.embeddings[p_idx], g_emb, sizes, point_at, estimate, probe_labels=p_emb.dataset.subjects[p_idx],
        gallery_labels=g_ids, exclude=prefixed, max_fpir=search.max_fpir or engine.config.max_fpir,
        description=f"The {len(p_idx):,} probes above searched against random subsets of the {n_gallery:,} strangers "
                    f"(exact search; the same exclusions).")
    fm = result.to_dict()
    gallery_names = " + ".join(f"{g.dataset.name} ({len(g):,} faces)" for g in g_parts)
    fm["title"] = f"False-match experiment: {len(p_idx):,} people searched against {n_gallery:,} strangers"
    fm["description"] = (
        f"Each of the {len(p_idx):,} subjects of {probes.name} is searched (one photo each) against "
        f"{gallery_names}, people who are not them. Any candidate at or above an operating point's threshold "
        f"is a false match - unless the stranger is in fact the same person (known overlaps: "
        f"{len(exclude)} listed and left out); the highest-scoring pairs are shown below for a person to check. "
        f"'Mates found' is the share of probes whose own second photo scores at or above the threshold.")
    return build_audit(
        model=_model(engine),
        dataset={"name": f"{probes.name} vs {gallery_names}",
                 "description": " ".join([probes.description, *[g.dataset.description for g in g_parts]]),
                 "summary": {"probes": len(p_idx), "probes_with_a_second_photo": int(mates.any(axis=1).sum()),
                             "gallery_faces": n_gallery, "known_overlaps_excluded": len(exclude)}},
        operating_point={"threshold": search.threshold, "target_fmr": search.max_fmr, "policy": search.policy,
                         "extrapolated": search.extrapolated, "max_fpir": search.max_fpir,
                         "collection_size": n_gallery, "calibration": search.calibration},
        false_match_experiment=fm, fpir_check=check.to_dict(),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
