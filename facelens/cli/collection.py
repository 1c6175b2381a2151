"""The collection commands: ``facelens collection``, ``index``, ``search``, ``faces`` and ``person``."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import FacelensError, ImageDecodeError, InvalidArgumentError
from ..types import LEAD_NOTICE, SearchMode
from ._common import (
    _QUALITY_CHOICES,
    EXIT_INPUT,
    EXIT_NO_MATCH,
    EXIT_OK,
    EXIT_USAGE,
    _call,
    _collection_engine,
    _emit,
    _fail,
    _FiniteFloatRange,
    _home_option,
    _json_and_home,
    _operating_point_words,
    _rate,
    _State,
    _threshold_options,
)

if TYPE_CHECKING:
    from ..accountability.actor import Actor
    from ..engine import Engine
    from ..types import SearchResult

__all__ = ["collection", "faces", "index", "person", "search"]

_log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def _purpose_option(f: Any) -> Any:
    """--purpose: the case reference or reason recorded with a search in the signed log."""
    return click.option("--purpose", default=None, metavar="TEXT", help="Why this search is run (a case reference "
                        "such as \"case 2024-0173\"); recorded with it in the home's signed log.")(f)


def _me() -> Actor:
    """Who runs this command: the local user (or $FACELENS_ACTOR), the actor of every action it records in
    the home's signed log (the log `facelens serve` writes, signed with the same key)."""
    from ..accountability.actor import Actor

    return Actor.cli()


@click.group()
def collection() -> None:
    """Create, list, describe, delete and check collections."""


def _policy_options(f: Any) -> Any:
    """The policy options of ``collection create``: a JSON file of policy fields, and a flag per field
    (a flag wins over the file; a field given by neither keeps its default)."""
    rate = _FiniteFloatRange(min=0, max=1, min_open=True)
    options = [
        click.option("--policy-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                     help="A JSON object of policy fields (docs/identification.md, Policies)."),
        click.option("--allow-modes", default=None, metavar="MODES",
                     help="Comma-separated search modes the collection answers (default identify,investigate)."),
        click.option("--max-fpir", "policy_max_fpir", type=rate, default=None, metavar="RATE",
                     help="The loosest max FPIR an identification may use (a floor; default none)."),
        click.option("--max-fmr", "policy_max_fmr", type=rate, default=None, metavar="RATE",
                     help="The loosest per-comparison false-match rate an identification may use."),
        click.option("--purpose-required", is_flag=True, default=False, help="Every search must state a purpose."),
        click.option("--no-review-required", is_flag=True, default=False,
                     help="Investigation candidates do not become review items."),
        click.option("--retention-days", type=_FiniteFloatRange(min=0, max=3650, min_open=True), default=None,
                     help="Days review items and probe crops are kept (default 30)."),
        click.option("--disclose-before-review", is_flag=True, default=False,
                     help="Investigations show candidate identities to the searcher before review."),
        click.option("--no-face-crops", is_flag=True, default=False, help="Keep no crop of enrolled faces."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _policy_from_flags(*, policy_file: Path | None, allow_modes: str | None, policy_max_fpir: float | None,
                       policy_max_fmr: float | None, purpose_required: bool, no_review_required: bool,
                       retention_days: float | None, disclose_before_review: bool,
                       no_face_crops: bool) -> dict[str, Any]:
    """The policy fields ``collection create`` was given (the engine validates them)."""
    fields: dict[str, Any] = {}
    if policy_file is not None:
        try:
            fields = json.loads(policy_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            click.echo(f"facelens: error: {policy_file}: not a JSON policy file ({exc})", err=True)
            sys.exit(EXIT_USAGE)
        if not isinstance(fields, dict):
            click.echo(f"facelens: error: {policy_file}: a policy file holds one JSON object of policy fields",
                       err=True)
            sys.exit(EXIT_USAGE)
    flags: dict[str, Any] = {
        "allowed_modes": None if allow_modes is None else _modes(allow_modes), "max_fpir": policy_max_fpir,
        "max_fmr": policy_max_fmr, "purpose_required": True if purpose_required else None,
        "review_required": False if no_review_required else None, "retention_days": retention_days,
        "disclose_before_review": True if disclose_before_review else None,
        "face_crops": False if no_face_crops else None}
    return {**fields, **{k: v for k, v in flags.items() if v is not None}}


def _modes(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


@collection.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the new collection's description as JSON.")
@_home_option
@click.option("--model", default=None, help="Model the collection is bound to (default buffalo_s).")
@click.option("--calibration", "calibration", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Calibration profile for this collection's searches (from `facelens calibrate`; default: the "
              "model's shipped profile).")
@click.option("--lead-floor", "lead_floor", type=_FiniteFloatRange(min=0, max=1, min_open=True), default=None,
              metavar="FMR", help="Investigations list candidates scoring at least the threshold of this "
              "per-comparison false-match rate (default 1e-3).")
@click.option("--store", "store", default=None, metavar="URI",
              help="Where the collection's vectors are kept: faiss (default), milvus-lite, or milvus://HOST:PORT, "
              "optionally with an index (milvus://HOST:PORT?index=IVF_PQ&nlist=1024&m=64); default: "
              "$FACELENS_VECTOR_STORE (docs/scale-out.md).")
@_policy_options
@click.pass_obj
def collection_create(state: _State, /, name: str, as_json: bool, home: Path | None, model: str | None,
                      calibration: str | None, lead_floor: float | None, store: str | None,
                      **policy_flags: Any) -> None:
    """Create an empty collection NAME bound to the engine's model, with its policy (the defaults unless
    --policy-file or the policy flags say otherwise; docs/identification.md, "Policies")."""
    policy = _policy_from_flags(**policy_flags)
    engine = _collection_engine(state, home, model=model)
    info = _call(engine.create_collection, name, calibration=calibration, lead_floor_fmr=lead_floor, policy=policy,
                 actor=_me(), store=store)
    _emit(state, as_json, info.to_dict(), f"created collection {name!r} (model {info.model_name}, vectors in "
          f"{info.vector_store}, {info.index_factory}) in {engine.home}")


@collection.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of names.")
@_home_option
@click.pass_obj
def collection_list(state: _State, /, as_json: bool, home: Path | None) -> None:
    """List the collections."""
    from ..store import default_home, list_collection_names

    names = list_collection_names(home or default_home())
    _emit(state, as_json, {"collections": names}, "\n".join(names) if names else "no collections")


@collection.command("describe")
@click.argument("name")
@_json_and_home
@click.pass_obj
def collection_describe(state: _State, /, name: str, as_json: bool, home: Path | None) -> None:
    """Face count, person count, model and index of collection NAME."""
    info = _call(_collection_engine(state, home).describe_collection, name)
    d = info.to_dict()
    _emit(state, as_json, d, "\n".join(f"{k}: {v}" for k, v in d.items()))


@collection.command("delete")
@click.argument("name")
@_json_and_home
@click.pass_obj
def collection_delete(state: _State, /, name: str, as_json: bool, home: Path | None) -> None:
    """Delete collection NAME and every face in it."""
    _call(_collection_engine(state, home).delete_collection, name, actor=_me())
    _emit(state, as_json, {"deleted": name}, f"deleted collection {name!r}")


@collection.command("check")
@click.argument("name")
@click.option("--repair", is_flag=True, help="Rebuild the vector index from the metadata if they differ.")
@_json_and_home
@click.pass_obj
def collection_check(state: _State, /, name: str, repair: bool, as_json: bool, home: Path | None) -> None:
    """Check that the vector index holds exactly the faces in the metadata (exit 1 if not, unrepaired)."""
    r = _call(_collection_engine(state, home).check_collection, name, repair=repair)
    d = {"faces": r.faces, "vectors": r.vectors, "missing_from_index": r.missing_from_index,
         "extra_in_index": r.extra_in_index, "rerank_rows_wrong": r.rerank_rows_wrong, "consistent": r.consistent,
         "repaired": r.repaired}
    text = (f"{name}: {r.faces} faces, {r.vectors} vectors; " + ("consistent" if r.consistent else
            f"{r.missing_from_index} missing from the index, {r.extra_in_index} extra, "
            f"{r.rerank_rows_wrong} wrong float16 re-rank rows"
            + (" (repaired)" if r.repaired else " (run with --repair)")))
    _emit(state, as_json, d, text)
    sys.exit(EXIT_OK if r.consistent or r.repaired else EXIT_NO_MATCH)


def _policy_doc(engine: Engine, name: str) -> dict[str, Any]:
    return {"collection": name, "policy": _call(engine.collection_policy, name).to_dict(),
            "lead_floor_fmr": _call(engine.lead_floor, name)}


def _policy_text(doc: dict[str, Any]) -> str:
    lines = [f"policy of collection {doc['collection']!r}:"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in doc["policy"].items()]
    return "\n".join([*lines, f"lead floor: false-match rate {doc['lead_floor_fmr']:g} per comparison"])


def _setting(text: str) -> tuple[str, Any]:
    """``field=value`` of ``--set``: the value is JSON (true, 0.001, null, ["identify"]); allowed_modes
    also takes a comma-separated list."""
    field, sep, raw = text.partition("=")
    if not sep or not field.strip():
        raise click.BadParameter(f"{text!r}: give field=value, e.g. max_fpir=0.001", param_hint="--set")
    field = field.strip()
    try:
        value = json.loads(raw)
    except ValueError:
        if field != "allowed_modes":
            raise click.BadParameter(f"{text!r}: the value must be JSON (true, false, null, a number, a list)",
                                     param_hint="--set") from None
        value = _modes(raw)
    return field, value


@collection.command("policy")
@click.argument("name")
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE",
              help="Change a policy field (repeatable); without --set, show the policy.")
@_json_and_home
@click.pass_obj
def collection_policy(state: _State, /, name: str, settings: tuple[str, ...], as_json: bool,
                      home: Path | None) -> None:
    """Show the policy of collection NAME, or change the fields given with --set (logged with who changed
    it, the policy before and after). Fields and values: docs/identification.md, "Policies"."""
    changes = dict(_setting(s) for s in settings)
    engine = _collection_engine(state, home)
    if changes:
        _call(engine.set_collection_policy, name, changes, actor=_me())
    doc = _policy_doc(engine, name)
    _emit(state, as_json, doc, ("changed " + ", ".join(changes) + "; " if changes else "") + _policy_text(doc))


@collection.command("lead-floor")
@click.argument("name")
@click.argument("fmr", type=_FiniteFloatRange(min=0, max=1, min_open=True))
@_json_and_home
@click.pass_obj
def collection_lead_floor(state: _State, /, name: str, fmr: float, as_json: bool, home: Path | None) -> None:
    """Set the lead floor of collection NAME: investigations list candidates scoring at least the threshold
    of per-comparison false-match rate FMR (logged with the floor before and after)."""
    engine = _collection_engine(state, home)
    _call(engine.set_lead_floor, name, fmr, actor=_me())
    doc = _policy_doc(engine, name)
    _emit(state, as_json, doc, f"lead floor of {name!r} set to false-match rate {fmr:g} per comparison")


def _text_id(name: str) -> str:
    """A file name as an external image id: bytes that are not UTF-8 become escapes (b'\\xff' -> '\\xff')."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _expand_images(paths: tuple[str, ...]) -> list[tuple[str, str]]:
    """(file, default external id) for each image: a file's name, or its path inside a given folder.

    Inside a folder only regular files with an image suffix are taken, and symbolic links are skipped,
    files and folders alike: a link can point out of the folder (``photos/x -> /``), loop, or index
    the same photo twice under two ids. The skipped links are named in a warning. A path given on
    the command line is used as given, link or not.
    """
    out: list[tuple[str, str]] = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            out.append((p, _text_id(path.name)))
            continue
        skipped: list[str] = []
        found: list[Path] = []
        for root, dirs, files in os.walk(path):  # does not descend into linked folders
            here = Path(root)
            skipped += [str(here / d) for d in dirs if (here / d).is_symlink()]
            dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink())
            for name in files:
                f = here / name
                if f.is_symlink():
                    skipped.append(str(f))
                elif f.suffix.lower() in _IMAGE_SUFFIXES and stat.S_ISREG(f.lstat().st_mode):
                    found.append(f)
        out += [(str(f), _text_id(f.relative_to(path).as_posix())) for f in sorted(found)]
        if skipped:
            _log.warning("%s: skipped %d symbolic link(s) inside the folder: %s", p, len(skipped),
                         ", ".join(sorted(skipped)[:5]) + (", ..." if len(skipped) > 5 else ""))
    return out


def _expand_list(paths: tuple[str, ...]) -> list[tuple[str, str]]:
    """:func:`_expand_images`, where ``@FILE`` names a list of paths or URIs, one a line (blank lines and
    lines starting with ``#`` skipped), each its own external id as written."""
    out: list[tuple[str, str]] = []
    for p in paths:
        if not p.startswith("@"):
            out += _expand_images((p,))
            continue
        try:
            lines = Path(p[1:]).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeError) as exc:
            raise InvalidArgumentError(f"{p[1:]}: cannot read the list of images: {exc}") from None
        out += [(line.strip(), line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    return out


@click.command()
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("--external-id", default=None, help="External image id (one image only; default: the file name, "
              "or the path inside a folder).")
@click.option("--person", "person_id", default=None, help="Person id to give the largest face of each image "
              "(it must match the person's stored faces; docs/collections.md, Enrolment).")
@click.option("--all-faces", is_flag=True, help="With --person: offer every face of the image, not just the "
              "largest.")
@click.option("--enrol-max-fmr", type=_FiniteFloatRange(min=0, max=1, min_open=True), default=None, metavar="RATE",
              help="With --person: a face must match the person's stored faces at this per-comparison "
              "false-match rate (default 1e-4).")
@click.option("--no-match-check", is_flag=True, help="With --person: skip the match against the person's stored "
              "faces (recorded).")
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Index at most the N largest faces.")
@click.option("--quality-filter", type=_QUALITY_CHOICES, default=None, help="Refuse faces below this quality "
              "(default AUTO).")
@click.option("--workers", type=click.IntRange(min=1), default=2, help="Images processed in parallel.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS|local", help="Examine the images on Ray Data "
              "workers (local: start Ray here; ADDRESS: a cluster's), one writer commits them (docs/scale-out.md).")
@click.option("--ray-workers", type=click.IntRange(min=1), default=None, help="With --ray: worker actors, one CPU "
              "each (default 2).")
@click.option("--resume", is_flag=True, help="With --ray: images already indexed are only counted, not listed or "
              "recorded again (re-running a big job).")
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images stored per transaction (at most; a batch waits at most a second). An image is "
              "reported indexed once its batch is committed; an interrupted run stores whole batches only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_home_option
@click.pass_obj
def index(state: _State, /, name: str, paths: tuple[str, ...], external_id: str | None, person_id: str | None,
          all_faces: bool, enrol_max_fmr: float | None, no_match_check: bool, max_faces: int | None,
          quality_filter: str | None, workers: int, batch: int, ray_address: str | None,
          ray_workers: int | None, resume: bool, as_json: bool, home: Path | None) -> None:
    """Index the faces of each image in PATHS (files or folders, recursively) into collection NAME.

    Re-running skips images already indexed under the same external id, so an interrupted run resumes.
    With --ray, a PATH may also be @FILE: a list of image paths or URIs the workers can read, one a line.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    from ..engine import IndexPlan
    from ..imageio import check_image_file
    from ..types import IndexResult

    if person_id is not None:
        from ..engine import _check_person_id

        _check_person_id(person_id)  # one usage error (exit 2), not one error per image
    elif all_faces or enrol_max_fmr is not None or no_match_check:
        click.echo("facelens: error: --all-faces, --enrol-max-fmr and --no-match-check apply to --person", err=True)
        sys.exit(EXIT_USAGE)
    if ray_address is None and (ray_workers is not None or resume or any(p.startswith("@") for p in paths)):
        click.echo("facelens: error: --ray-workers, --resume and @FILE apply to --ray", err=True)
        sys.exit(EXIT_USAGE)
    images = _expand_images(paths) if ray_address is None else _expand_list(paths)
    if external_id is not None and len(images) != 1:
        click.echo("facelens: error: --external-id needs exactly one image", err=True)
        sys.exit(EXIT_USAGE)
    # Parallelism comes from the workers; one onnxruntime thread each avoids oversubscribing the cores.
    threads = None if os.environ.get("FACELENS_THREADS") else (1 if workers > 1 else 0)
    engine = _collection_engine(state, home, threads=threads)
    _call(engine.describe_collection, name)  # fail early on an unknown collection
    enrol: dict[str, Any] = {} if person_id is None else {
        "all_faces": all_faces, "enrol_max_fmr": enrol_max_fmr, "match_check": not no_match_check}
    me = _me()

    def prepare(item: tuple[str, str]) -> tuple[str, str, IndexResult | IndexPlan | dict[str, Any]]:
        """Hash, decode, detect, embed, check one image (in a worker thread; nothing stored yet)."""
        path, default_id = item
        eid = external_id or default_id
        try:
            check_image_file(path)  # before the engine opens it to hash it: a FIFO would block there
            return path, eid, engine.prepare_index(name, path, external_image_id=eid, person_id=person_id,
                                                   max_faces=max_faces, quality_filter=quality_filter, actor=me,
                                                   **enrol)
        except (ImageDecodeError, InvalidArgumentError) as exc:
            return path, eid, {"image": path, "error": {"type": type(exc).__name__, "message": str(exc)}}

    results: list[dict[str, Any]] = []
    show = sys.stderr.isatty() and not state.quiet and len(images) > 3
    from tqdm import tqdm

    skipped = None  # --ray --resume: images already indexed, only counted
    if ray_address is not None:  # Ray Data workers, one writer here: the same results (facelens/scale)
        from ..scale.ray_index import index_with_ray

        with tqdm(total=len(images), desc=f"index {name}", unit="img", disable=not show) as bar:
            report = _call(index_with_ray, engine, name, [(p, external_id or i) for p, i in images],
                           address=ray_address, workers=ray_workers or 2, person_id=person_id, max_faces=max_faces,
                           quality_filter=quality_filter, resume=resume, actor=me, **enrol,
                           progress=lambda done, _, out: bar.update(done - bar.n))
        results = [o.to_dict() for o in report.outcomes]
        for r in results:
            if "error" in r:
                click.echo(f"facelens: error: {r['error']['message']}", err=True)
        skipped = report.skipped
    else:
        # Images are prepared in parallel by the workers (onnxruntime and the decoders release the GIL) while
        # this thread stores those prepared, in order, many per transaction: a batch is written when it has
        # --batch images or has waited a second, and only what is committed is reported. With --person, each
        # image is stored before the next is checked against the person's faces.
        size = 1 if person_id is not None else batch
        waiting: list[tuple[str, str, IndexResult | IndexPlan | dict[str, Any]]] = []
        since = time.monotonic()

        def flush(bar: Any) -> None:
            plans = [p for _, _, p in waiting if isinstance(p, IndexPlan)]
            stored = iter(engine.store_indexed(name, plans, actor=me) if plans else [])
            for path, eid, p in waiting:
                if isinstance(p, dict):
                    results.append(p)
                    click.echo(f"facelens: error: {p['error']['message']}", err=True)
                else:
                    r = next(stored) if isinstance(p, IndexPlan) else p
                    results.append({"image": path, "external_image_id": eid, **r.to_dict()})
                bar.update(1)
            waiting.clear()

        try:
            with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(images), desc=f"index {name}",
                                                                       unit="img", disable=not show) as bar:
                for prepared in pool.map(prepare, images):
                    waiting.append(prepared)
                    if len(waiting) >= size or time.monotonic() - since >= 1.0:
                        flush(bar)
                        since = time.monotonic()
                flush(bar)
        except FacelensError as exc:  # e.g. the signed log cannot be written: the batch was not indexed
            _fail(exc)
    errors = sum("error" in r for r in results)
    summary = {"images": len(results), "faces_indexed": sum(len(r.get("indexed", ())) for r in results
                                                            if not r.get("already_indexed")),
               "already_indexed": sum(bool(r.get("already_indexed")) for r in results),
               "faces_refused": sum(len(r.get("unindexed", ())) for r in results), "errors": errors}
    if skipped is not None:
        summary["skipped"] = skipped
    if as_json:
        click.echo(json.dumps({"collection": name, "summary": summary, "images": results}, indent=2))
    else:
        for r in results if len(results) <= 20 else []:
            if "error" not in r:
                reasons = [", ".join(u["refusal_reasons"]) for u in r["unindexed"]]
                state.say(f"{r['image']}: {len(r['indexed'])} indexed"
                          + (" (already)" if r["already_indexed"] else "")
                          + (f", {len(reasons)} refused ({'; '.join(reasons)})" if reasons else ""))
                for check in r["enrolment"]:
                    if not check["passed"] or not check["checked"]:
                        state.say(f"  {check['reason']}")
        state.say(f"{name}: {summary['faces_indexed']} faces indexed from {summary['images']} images, "
                  f"{summary['already_indexed']} already indexed, {summary['faces_refused']} faces refused, "
                  f"{errors} errors" + (f", {skipped} skipped (--resume)" if skipped else ""))
    sys.exit(EXIT_INPUT if errors else EXIT_OK)


def _mode_options(f: Any) -> Any:
    """--mode identify|investigate and --max-candidates: what a search is for (docs/identification.md)."""
    f = click.option("--max-candidates", type=click.IntRange(min=1), default=None, help="investigate: at most this "
                     "many candidates (default 10).")(f)
    return click.option("--mode", type=click.Choice([m.value for m in SearchMode], case_sensitive=False),
                        default=SearchMode.IDENTIFY.value, show_default=True, help="identify: matches at a strict, "
                        "measured rate; investigate: ranked candidates, leads that a person must review.")(f)


def _search_lines(r: SearchResult, *, persons: bool = False) -> list[str]:
    """The text of one search result: its matches, or in investigate mode its leads and what they mean."""
    if r.mode is SearchMode.INVESTIGATE:
        op = r.operating_point
        lines = [f"investigation of {r.collection_size:,} faces: {len(r.candidates)} lead"
                 f"{'s' if len(r.candidates) != 1 else ''} (of at most {r.max_candidates}) above the lead floor "
                 f"(false-match rate {op.max_fmr:.2g} per comparison, score >= {op.threshold:.4f}; {op.policy} "
                 f"policy, set by {op.limited_by})", f"  {LEAD_NOTICE}"]
        for c in r.candidates:
            who = (f"{c.face_id}  {c.external_image_id or '-'}  person {c.person_id or '-'}" if c.face_id
                   else "(who: withheld until review)")
            lines.append(f"  lead {c.rank}  {who}  score {c.score:.3f}  false-match rate "
                         f"{_rate(c.fmr, c.fmr_extrapolated)}  expected strangers this high: {c.expected_strangers:.2g}"
                         + (f"  review item {c.review_item_id}" if c.review_item_id else ""))
            lines.append(f"    {c.meaning}")
        return lines
    what = "person(s)" if persons else f"match{'es' if len(r.matches) != 1 else ''}"
    lines = [f"searched {r.collection_size:,} faces at {_operating_point_words(r.operating_point)}: "
             f"{len(r.matches)} {what}"]
    if persons:
        lines += [f"  {m.person_id}  score {m.score:.3f}  false-match rate {_rate(m.fmr, m.fmr_extrapolated)}  "
                  f"(face {m.face_id})" for m in r.matches]
    else:
        lines += [f"  {m.face_id}  {m.external_image_id or '-'}  person {m.person_id or '-'}  "
                  f"score {m.score:.3f}  false-match rate {_rate(m.fmr, m.fmr_extrapolated)}" for m in r.matches]
    return lines


@click.command()
@click.argument("name")
@click.argument("image", required=False)
@click.option("--face-id", default=None, help="Search with a face already in the collection instead of an image.")
@_mode_options
@click.option("--max-results", type=click.IntRange(min=1), default=None, help="identify: at most this many matches "
              "(default 10).")
@_threshold_options
@click.option("--all-faces", is_flag=True, help="Search with every face of the image, not just the largest.")
@_purpose_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (keys in docs/cli.md).")
@_home_option
@click.pass_obj
def search(state: _State, /, name: str, image: str | None, face_id: str | None, mode: str,
           max_candidates: int | None, max_results: int | None, max_fmr: float | None, max_fpir: float | None,
           min_score: float | None, all_faces: bool, purpose: str | None, as_json: bool, home: Path | None) -> None:
    """Search collection NAME for the face in IMAGE (or --face-id): matches best first, or with
    --mode investigate ranked candidates (leads for a person to review). Recorded in the home's signed
    log like a search over HTTP, with the local user as the actor."""
    if (image is None) == (face_id is None):
        click.echo("facelens: error: give either IMAGE or --face-id", err=True)
        sys.exit(EXIT_USAGE)
    engine = _collection_engine(state, home)
    kw = {"mode": mode, "max_candidates": max_candidates, "max_results": max_results, "max_fmr": max_fmr,
          "max_fpir": max_fpir, "min_score": min_score, "actor": _me(), "purpose": purpose}
    if face_id is not None:
        results = [_call(engine.search_faces, name, face_id, **kw)]
    else:
        results = _call(engine.search_faces_by_image, name, image, all_faces=all_faces, **kw)
    if as_json:
        doc = (results[0].to_dict() if not all_faces else
               {"results": [r.to_dict() for r in results], "search_id": results[0].search_id,
                "log_entry": results[0].log_entry})
        doc.update(collection=name)
        click.echo(json.dumps(doc, indent=2))
        return
    for r in results:
        state.say("\n".join(_search_lines(r)))


_MAX_PAGE = 1_000_000  # faces per `faces list` page


@click.group()
def faces() -> None:
    """List and delete the faces stored in a collection."""


@faces.command("list")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, _MAX_PAGE), default=100, help="Faces per page.")
@click.option("--next-token", default=None, help="Token printed by the previous page.")
@_json_and_home
@click.pass_obj
def faces_list(state: _State, /, name: str, limit: int, next_token: str | None, as_json: bool,
               home: Path | None) -> None:
    """List the faces of collection NAME, oldest first, a page at a time."""
    try:
        page, token = _call(_collection_engine(state, home).list_faces, name, limit=limit, next_token=next_token)
    except OverflowError:  # a token made up, not printed by a previous page
        click.echo(f"facelens: error: invalid page token {next_token!r}: pass the token a previous page printed",
                   err=True)
        sys.exit(EXIT_USAGE)
    doc = {"faces": [f.to_dict() for f in page], "next_token": token}
    lines = [f"{f.face_id}  {f.external_image_id or '-'}  person {f.person_id or '-'}" for f in page]
    if token:
        lines.append(f"(more: --next-token {token})")
    _emit(state, as_json, doc, "\n".join(lines) if lines else "no faces")


@faces.command("delete")
@click.argument("name")
@click.argument("face_ids", nargs=-1, required=True)
@_json_and_home
@click.pass_obj
def faces_delete(state: _State, /, name: str, face_ids: tuple[str, ...], as_json: bool, home: Path | None) -> None:
    """Delete faces from collection NAME by id.

    The ids that exist are deleted; if any id is unknown, it is named on stderr and the exit code is 3.
    """
    receipt = _call(_collection_engine(state, home).erase_faces, name, list(face_ids), actor=_me())
    deleted = list(receipt.face_ids)
    unknown = [f for f in face_ids if f not in deleted]
    _emit(state, as_json, {"deleted": deleted, "unknown": unknown, "receipt": receipt.to_dict()},
          f"deleted {len(deleted)} face(s)\n{receipt.describe()}")
    _unknown_faces(name, unknown)


def _unknown_faces(name: str, unknown: list[str]) -> None:
    """Name the unknown face ids on stderr and exit 3, if there are any."""
    if unknown:
        faces = "face" if len(unknown) == 1 else "faces"
        click.echo(f"facelens: error: no {faces} {', '.join(map(repr, unknown))} in collection {name!r}", err=True)
        sys.exit(EXIT_INPUT)


@click.group()
def person() -> None:
    """Persons: group several faces of one individual; erase everything about someone."""


@person.command("create")
@click.argument("name")
@click.argument("person_id")
@_json_and_home
@click.pass_obj
def person_create(state: _State, /, name: str, person_id: str, as_json: bool, home: Path | None) -> None:
    """Create PERSON_ID in collection NAME."""
    _call(_collection_engine(state, home).create_person, name, person_id, actor=_me())
    _emit(state, as_json, {"created": person_id}, f"created person {person_id!r}")


@person.command("list")
@click.argument("name")
@_json_and_home
@click.pass_obj
def person_list(state: _State, /, name: str, as_json: bool, home: Path | None) -> None:
    """List the persons of collection NAME with their face counts."""
    rows = _call(_collection_engine(state, home).list_persons, name)
    _emit(state, as_json, {"persons": [{"person_id": p, "faces": n} for p, n in rows]},
          "\n".join(f"{p}  {n} face(s)" for p, n in rows) if rows else "no persons")


@person.command("associate")
@click.argument("name")
@click.argument("person_id")
@click.argument("face_ids", nargs=-1, required=True)
@_json_and_home
@click.pass_obj
def person_associate(state: _State, /, name: str, person_id: str, face_ids: tuple[str, ...], as_json: bool,
                     home: Path | None) -> None:
    """Give FACE_IDS to PERSON_ID (unknown ids are named on stderr, exit code 3; the others are given)."""
    done = _call(_collection_engine(state, home).associate_faces, name, person_id, list(face_ids), actor=_me())
    unknown = [f for f in face_ids if f not in done]
    _emit(state, as_json, {"associated": done, "unknown": unknown},
          f"associated {len(done)} face(s) with {person_id!r}")
    _unknown_faces(name, unknown)


@person.command("disassociate")
@click.argument("name")
@click.argument("person_id")
@click.argument("face_ids", nargs=-1, required=True)
@_json_and_home
@click.pass_obj
def person_disassociate(state: _State, /, name: str, person_id: str, face_ids: tuple[str, ...], as_json: bool,
                        home: Path | None) -> None:
    """Take FACE_IDS away from PERSON_ID (the faces stay in the collection)."""
    done = _call(_collection_engine(state, home).disassociate_faces, name, person_id, list(face_ids),
                 actor=_me())
    _emit(state, as_json, {"disassociated": done}, f"disassociated {len(done)} face(s) from {person_id!r}")


@person.command("delete")
@click.argument("name")
@click.argument("person_id")
@_json_and_home
@click.pass_obj
def person_delete(state: _State, /, name: str, person_id: str, as_json: bool, home: Path | None) -> None:
    """Erase PERSON_ID: the person and every face and vector of theirs. Prints the erasure's receipt (its
    id is in the signed log's entry for it): the answer to the person's erasure request."""
    receipt = _call(_collection_engine(state, home).erase_person, name, person_id, actor=_me())
    deleted = list(receipt.face_ids)
    _emit(state, as_json, {"deleted_person": person_id, "deleted_faces": deleted, "receipt": receipt.to_dict()},
          f"erased person {person_id!r} and {len(deleted)} face(s)\n{receipt.describe()}")


@person.command("search")
@click.argument("name")
@click.argument("image")
@_mode_options
@click.option("--max-results", type=click.IntRange(min=1), default=None, help="identify: at most this many "
              "persons (default 10).")
@_threshold_options
@_purpose_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as `search`, one match per person).")
@_home_option
@click.pass_obj
def person_search(state: _State, /, name: str, image: str, mode: str, max_candidates: int | None,
                  max_results: int | None, max_fmr: float | None, max_fpir: float | None, min_score: float | None,
                  purpose: str | None, as_json: bool, home: Path | None) -> None:
    """Search collection NAME for the persons whose best face matches the largest face in IMAGE (with
    --mode investigate: ranked candidate persons, leads for a person to review)."""
    r = _call(_collection_engine(state, home).search_persons_by_image, name, image, mode=mode,
              max_candidates=max_candidates, max_results=max_results, max_fmr=max_fmr, max_fpir=max_fpir,
              min_score=min_score, actor=_me(), purpose=purpose)
    doc = r.to_dict()
    doc.update(collection=name)
    _emit(state, as_json, doc, "\n".join(_search_lines(r, persons=True)))

