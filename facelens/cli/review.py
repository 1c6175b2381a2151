"""``facelens review``: the review queue of investigations (docs/identification.md, "Review"), as the local
user (``$FACELENS_ACTOR``, else the login name): list, show (with the two face crops), confirm, reject,
purge. Each command is one call into the engine's ``review_*`` methods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._common import _call, _collection_engine, _home_option, _json_and_home, _State

if TYPE_CHECKING:
    from ..accountability.review import ReviewItem

__all__ = ["review"]

_STATES = click.Choice(["pending", "confirmed", "rejected", "expired", "withdrawn"], case_sensitive=False)


def _who(actor: Any) -> str:
    return "-" if actor is None else str(actor)


def _line(item: ReviewItem) -> str:
    return (f"{item.item_id}  {item.collection}  {item.state.value}  lead {item.rank}  score {item.score:.3f}  "
            f"expected strangers {item.expected_strangers:.2g}  person {item.person_id or '-'}  "
            f"searcher {_who(item.searcher)}  expires {item.expires}")


def _lines(item: ReviewItem) -> list[str]:
    c = item.to_dict()["candidate"]
    entry = (f"seq {item.log_entry['seq']}, hash {item.log_entry['hash']}" if item.log_entry
             else "none (the search was not recorded)")
    probe = f"image sha256 {item.probe_sha256}" if item.probe_sha256 else f"stored face {item.probe_face_id}"
    lines = [f"review item {item.item_id} of collection {item.collection}: {item.state.value}",
             f"  search {item.search_id} ({item.action}) by {_who(item.searcher)}, purpose: {item.purpose or '-'}",
             f"  log entry: {entry}",
             f"  probe: {probe}",
             f"  lead {c['rank']}: face {c['face_id'] or '-'}  {c['external_image_id'] or '-'}  person "
             f"{c['person_id'] or '-'}  score {item.score:.3f}  expected strangers this high: "
             f"{item.expected_strangers:.2g} of {item.collection_size:,} faces",
             f"    {item.meaning}",
             f"  created {item.created}, expires {item.expires}"]
    if item.decided:
        lines.append(f"  decided: {item.state.value} by {_who(item.decided_by)} at {item.decided_at}: {item.reason}")
    return lines


@click.group()
def review() -> None:
    """The review queue: every candidate of an investigation is a lead a person other than the searcher
    confirms or rejects, with a reason (docs/identification.md, "Review"). You act as $FACELENS_ACTOR, else
    your login name."""


@review.command("list")
@click.option("--collection", "collection", default=None, help="Only this collection (default: every one).")
@click.option("--state", type=_STATES, default=None, help="Only items in this state (default: any).")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, help="Items per page.")
@click.option("--after", default=None, help="The token printed by the previous page.")
@_json_and_home
@click.pass_obj
def review_list(state_: _State, /, collection: str | None, state: str | None, limit: int, after: str | None,
                as_json: bool, home: Path | None) -> None:
    """List review items, oldest first (expired ones are purged first)."""
    from ..accountability.actor import Actor

    engine = _collection_engine(state_, home)
    items, token = _call(engine.review_list, collection, state=state, limit=limit, after=after, actor=Actor.cli())
    if as_json:
        click.echo(json.dumps({"items": [i.to_dict() for i in items], "next_after": token}, indent=2))
        return
    state_.say("\n".join(_line(i) for i in items) if items else "no review items")
    if token:
        state_.say(f"more: --after {token}")


@review.command("show")
@click.argument("name")
@click.argument("item_id")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the two crops here: ITEM_ID-probe.jpg (the face searched) and ITEM_ID-candidate.jpg.")
@_json_and_home
@click.pass_obj
def review_show(state: _State, /, name: str, item_id: str, out: Path | None, as_json: bool, home: Path | None) -> None:
    """Show review item ITEM_ID of collection NAME: the lead, who it points at, the search's log entry,
    purpose and searcher, the decision; with --out, the two face crops to compare."""
    from ..accountability.actor import Actor
    from ..errors import FacelensError

    engine = _collection_engine(state, home)
    item = _call(engine.review_get, name, item_id, actor=Actor.cli())
    files: dict[str, str | None] = {"probe": None, "candidate": None}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for what in ("probe", "candidate"):
            if what == "candidate" and item.face_id is None:
                click.echo(f"facelens: no candidate crop: the lead's face is erased (or the item {item.state.value})",
                           err=True)
                continue
            try:
                jpeg = (engine.review_probe_crop(name, item.item_id) if what == "probe"
                        else engine.face_crop(name, item.face_id or ""))
            except FacelensError as exc:  # (deleted: decided, expired, erased; or never kept)
                click.echo(f"facelens: no {what} crop: {exc}", err=True)
                continue
            path = out / f"{item.item_id}-{what}.jpg"
            path.write_bytes(jpeg)
            files[what] = str(path)
    if as_json:
        click.echo(json.dumps({**item.to_dict(), **({"files": files} if out is not None else {})}, indent=2))
        return
    state.say("\n".join(_lines(item) + [f"  {what} crop: {path}" for what, path in files.items() if path]))


def _decide(state: _State, name: str, item_id: str, decision: str, reason: str, as_json: bool,
            home: Path | None) -> None:
    from ..accountability.actor import Actor

    item = _call(_collection_engine(state, home).review_decide, name, item_id, decision, reason, actor=Actor.cli())
    if as_json:
        click.echo(json.dumps(item.to_dict(), indent=2))
        return
    state.say(f"{item.state.value} review item {item.item_id} as {_who(item.decided_by)}: {item.reason}")


_REASON = click.option("--reason", required=True, help="What in the two faces decided it (recorded in the log).")


@review.command("confirm")
@click.argument("name")
@click.argument("item_id")
@_REASON
@_json_and_home
@click.pass_obj
def review_confirm(state: _State, /, name: str, item_id: str, reason: str, as_json: bool, home: Path | None) -> None:
    """Confirm review item ITEM_ID: the lead is the searched person. Final and recorded; not by the searcher
    (exit code 5)."""
    _decide(state, name, item_id, "confirm", reason, as_json, home)


@review.command("reject")
@click.argument("name")
@click.argument("item_id")
@_REASON
@_json_and_home
@click.pass_obj
def review_reject(state: _State, /, name: str, item_id: str, reason: str, as_json: bool, home: Path | None) -> None:
    """Reject review item ITEM_ID: the lead is not the searched person. Final and recorded; not by the
    searcher (exit code 5)."""
    _decide(state, name, item_id, "reject", reason, as_json, home)


@review.command("purge")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_home_option
@click.pass_obj
def review_purge(state: _State, /, name: str, as_json: bool, home: Path | None) -> None:
    """Expire the pending items of collection NAME older than its retention (their probe crops deleted);
    recorded as you."""
    from ..accountability.actor import Actor

    expired = _call(_collection_engine(state, home).review_purge, name, actor=Actor.cli())
    if as_json:
        click.echo(json.dumps({"collection": name, "expired": expired, "count": len(expired)}, indent=2))
        return
    state.say(f"expired {len(expired)} review item(s) of {name!r}")
