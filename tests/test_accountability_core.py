"""The accountability core's foundation: actors, collection policies stored in the collection, the
engine recording actions in the signed log when (and only when) it is told who acts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import facelens
from facelens import Actor, CollectionPolicy
from facelens.accountability.log import read_entries
from facelens.errors import (
    CollectionNotFoundError,
    InvalidArgumentError,
    PolicyError,
    ReviewDecidedError,
    ReviewForbiddenError,
    ReviewItemNotFoundError,
    SearchLogError,
    error_status,
)


@pytest.fixture
def eng(tmp_path: Path) -> Iterator[facelens.Engine]:
    e = facelens.Engine(home=str(tmp_path / "home"), threads=1)
    yield e
    e.close()


def _actions(home: Path) -> list[dict[str, object]]:
    log = home / "service" / "search-log.sqlite"
    return [e.body for e in read_entries(log)] if log.exists() else []


def test_actor_names_who_acts_and_four_eyes_compares_kind_and_id(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Actor.for_key("k_1", "desk 4")
    assert key.to_dict() == {"kind": "key", "id": "k_1", "name": "desk 4"}
    assert Actor.from_dict(key.to_dict()) == key
    assert key.same_person(Actor.for_key("k_1")) and not key.same_person(Actor.cli())
    assert not key.same_person(None)
    monkeypatch.setenv("FACELENS_ACTOR", "officer-12")
    assert Actor.cli() == Actor("cli", "officer-12")
    with pytest.raises(InvalidArgumentError, match="kind"):
        Actor("root", "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="id"):
        Actor.python("  ")


def test_policy_defaults_validation_and_round_trip() -> None:
    p = CollectionPolicy()
    assert p.allowed_modes == ("identify", "investigate") and p.review_required and not p.disclose_before_review
    assert CollectionPolicy.from_json(p.to_json()) == p
    assert CollectionPolicy.from_json(None) == p  # a collection from before policies
    q = p.replace(allowed_modes=["INVESTIGATE"], max_fpir=1e-3, retention_days=7)
    assert q.allowed_modes == ("investigate",) and q.allows("investigate") and not q.allows("identify")
    assert q.retention_days == 7.0
    for bad in ({"allowed_modes": []}, {"allowed_modes": "identify"}, {"allowed_modes": ["guess"]},
                {"max_fpir": 0}, {"max_fpir": 1.5}, {"max_fmr": float("nan")}, {"max_fmr": True},
                {"retention_days": 0}, {"retention_days": float("inf")}, {"review_required": "yes"},
                {"no_such_rule": 1}):
        with pytest.raises(InvalidArgumentError):
            p.replace(**bad)


def test_policy_is_stored_in_the_collection_and_seen_by_another_engine(eng: facelens.Engine) -> None:
    eng.create_collection("c", policy={"purpose_required": True, "allowed_modes": ["investigate"]})
    assert eng.collection_policy("c").purpose_required
    other = facelens.Engine(home=str(eng.home), threads=1)
    try:
        assert other.collection_policy("c").allowed_modes == ("investigate",)
        eng.set_collection_policy("c", {"retention_days": 3}, actor=Actor.python("test"))
        assert other.collection_policy("c").retention_days == 3.0  # read from the database, not cached
    finally:
        other.close()
    with pytest.raises(InvalidArgumentError):
        eng.create_collection("d", policy={"bogus": 1})
    assert "d" not in eng.list_collections()  # a bad policy creates nothing
    with pytest.raises(CollectionNotFoundError):
        eng.collection_policy("nope")


def test_record_logs_with_the_actor_and_only_with_one(eng: facelens.Engine) -> None:
    eng.create_collection("c")
    assert eng.record(None, {"action": "noop"}) is None
    eng.set_collection_policy("c", {"face_crops": False})  # no actor: nothing recorded
    assert _actions(eng.home) == []
    entry = eng.set_collection_policy("c", {"retention_days": 9}, actor=Actor.for_key("k_9", "admin desk"))
    assert entry.retention_days == 9.0
    (body,) = _actions(eng.home)
    assert body["action"] == "policy_changed" and body["collection"] == "c" and body["key_id"] == "k_9"
    assert body["actor"] == {"kind": "key", "id": "k_9", "name": "admin desk"}
    assert body["before"]["retention_days"] == 30.0 and body["after"]["retention_days"] == 9.0  # type: ignore[index]
    assert not body["before"]["face_crops"]  # type: ignore[index]
    assert eng.log.verify().ok  # signed by the home's key
    with pytest.raises(SearchLogError):
        eng.record(Actor.cli(), {"action": "x", "seq": 5})  # reserved fields refused


def test_new_errors_have_stable_codes() -> None:
    assert error_status(PolicyError("x")) == (403, "policy_forbids")
    assert error_status(ReviewForbiddenError("x")) == (403, "review_forbidden")
    assert error_status(ReviewDecidedError("x")) == (409, "review_decided")
    assert error_status(ReviewItemNotFoundError("x")) == (404, "review_item_not_found")
    assert error_status(SearchLogError("x")) == (503, "search_log_unavailable")
