"""The facelens service over real HTTP: uvicorn on 127.0.0.1, the bundled portraits, every endpoint,
every refusal, the search log and its tamper detection, concurrent clients, graceful shutdown."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import sqlite3
import struct
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image
from pydantic import TypeAdapter

from facelens.accountability.log import LogPublicKey, verify_log
from facelens.cli import main
from facelens.server import ServerSettings, create_app
from facelens.server.errors import InsecureSettingsError
from facelens.server.keys import KeyStore
from facelens.server.ratelimit import RateLimiter

from ._service import LiveService, make_key
from .conftest import PEOPLE, PORTRAITS, portrait

LIMIT = 1024 * 1024  # request body limit of the test service


class Svc:
    """The module's service: its URL, a client per key, and the home folder."""

    def __init__(self, live: LiveService, home: Path, tokens: dict[str, str]) -> None:
        self.live = live
        self.home = home
        self.tokens = tokens
        self.clients = {name: httpx.Client(base_url=live.url, timeout=60,
                                           headers={"Authorization": f"Bearer {t}"}) for name, t in tokens.items()}
        self.anon = httpx.Client(base_url=live.url, timeout=60)

    def __getitem__(self, name: str) -> httpx.Client:
        return self.clients[name]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    home = tmp_path_factory.mktemp("service-home")
    tokens = {"admin": make_key(home, name="admin", admin=True)}
    settings = ServerSettings(home=home, workers=2, engine_threads=1, rate_limit=0, max_request_bytes=LIMIT,
                              purpose_overrides={"conc": "optional"})
    live = LiveService(settings)
    admin = httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {tokens['admin']}"})
    for name in ("alpha", "beta", "conc", "delta"):  # grants name existing collections only
        assert admin.post("/v1/collections", json={"name": name}).status_code == 201
    tokens.update({
        "alpha_search": make_key(home, name="s", grants={"alpha": ["search"]}),
        "alpha_index": make_key(home, name="i", grants={"alpha": ["index"]}),
        "alpha_read": make_key(home, name="r", grants={"alpha": ["read"]}),
        "alpha_admin": make_key(home, name="a", grants={"alpha": ["admin"]}),
        "beta_all": make_key(home, name="b", grants={"beta": ["admin", "search", "index", "read"]}),
        "delta_admin": make_key(home, name="d", grants={"delta": ["admin"]}),
    })
    s = Svc(live, home, tokens)
    # alpha: every person's first photo, half sent as multipart, half as base64 JSON
    for i, person in enumerate(PEOPLE):
        p = portrait(person)
        if i % 2:
            r = s["alpha_index"].post("/v1/collections/alpha/faces", files={"image": p.read_bytes()},
                                      data={"person_id": person, "external_image_id": p.name})
        else:
            r = s["alpha_index"].post("/v1/collections/alpha/faces",
                                      json={"image": _b64(p), "person_id": person, "external_image_id": p.name})
        assert r.status_code == 200 and len(r.json()["indexed"]) == 1, r.text
    yield s
    live.stop()


def test_server_health_version_and_docs_need_no_key(svc: Svc) -> None:
    assert svc.anon.get("/health").json() == {"status": "ok"}
    v = svc.anon.get("/v1/version").json()
    assert v["model_name"] == "buffalo_s" and v["embedding_size"] == 512 and v["api"] == "v1"
    # the documentation pages load their scripts from the service itself, not from a CDN
    for page in ("/docs", "/redoc"):
        html = svc.anon.get(page)
        assert html.status_code == 200 and "cdn." not in html.text
        scripts = re.findall(r'src="([^"]+\.js)"', html.text)
        assert scripts and all(svc.anon.get(src).status_code == 200 for src in scripts), scripts
    paths = svc.anon.get("/openapi.json").json()["paths"]
    assert {"/v1/detect", "/v1/compare", "/v1/collections", "/v1/collections/{collection}",
            "/v1/collections/{collection}/faces", "/v1/collections/{collection}/faces/{face_id}",
            "/v1/collections/{collection}/faces/delete", "/v1/collections/{collection}/persons",
            "/v1/collections/{collection}/persons/{person_id}",
            "/v1/collections/{collection}/persons/{person_id}/associate",
            "/v1/collections/{collection}/persons/{person_id}/disassociate",
            "/v1/collections/{collection}/search/image", "/v1/collections/{collection}/search/face",
            "/v1/collections/{collection}/search/persons", "/v1/log"} <= set(paths)
    body = paths["/v1/collections/{collection}/faces"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}


def test_server_refuses_missing_invalid_and_revoked_keys(svc: Svc) -> None:
    r = svc.anon.get("/v1/collections")
    assert "Authorization: Bearer" in _error(r, 401, "unauthorized") and r.headers["www-authenticate"] == "Bearer"
    bad = httpx.get(f"{svc.live.url}/v1/collections", headers={"Authorization": "Bearer fl_000000000000_nope"})
    _error(bad, 401, "unauthorized")
    forged = svc.tokens["admin"][:-4] + "AAAA"  # right key id, wrong secret
    _error(httpx.get(f"{svc.live.url}/v1/collections", headers={"Authorization": f"Bearer {forged}"}),
           401, "unauthorized")
    store = KeyStore.open(svc.home)
    new = store.create(name="short-lived", grants={"alpha": ["read"]})
    headers = {"Authorization": f"Bearer {new.token}"}
    assert httpx.get(f"{svc.live.url}/v1/collections", headers=headers).status_code == 200
    store.revoke(new.key.key_id)
    store.close()
    _error(httpx.get(f"{svc.live.url}/v1/collections", headers=headers), 401, "unauthorized")


def test_server_detect_multipart_and_base64(svc: Svc) -> None:
    p = portrait("B000444")
    a = svc["alpha_search"].post("/v1/detect", files={"image": p.read_bytes()}, data={"max_faces": "1"})
    b = svc["alpha_search"].post("/v1/detect", json={"image": _b64(p), "quality_filter": "HIGH"})
    assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
    fa, fb = a.json()["faces"][0], b.json()["faces"][0]
    assert fa["bbox"] == fb["bbox"] and len(fa["landmarks"]) == 5 and fb["quality_filter"] == "HIGH"
    assert "embedding" not in fa


def test_server_compare_is_logged_and_needs_a_purpose(svc: Svc) -> None:
    a, b = portrait("C001079"), portrait("C001079", "b")
    files = {"image_a": a.read_bytes(), "image_b": b.read_bytes()}
    assert "purpose" in _error(svc["alpha_search"].post("/v1/compare", files=files), 422, "purpose_required")
    r = svc["alpha_search"].post("/v1/compare", files=files, data={"purpose": "case 7"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["match"] is True and doc["fmr"] <= doc["max_fmr"] and doc["score"] >= doc["threshold"]
    other = svc["alpha_search"].post("/v1/compare", json={"image_a": _b64(a), "image_b": _b64(portrait("D000601")),
                                                          "purpose": "case 7", "max_fmr": 1e-6})
    assert other.json()["match"] is False and other.json()["max_fmr"] == 1e-6
    entry = _log_entry(svc, doc["log_entry"]["seq"])
    assert entry["action"] == "compare" and entry["purpose"] == "case 7" and entry["hash"] == doc["log_entry"]["hash"]
    assert entry["probe"] == {"image_a_sha256": hashlib.sha256(a.read_bytes()).hexdigest(),
                              "image_b_sha256": hashlib.sha256(b.read_bytes()).hexdigest()}
    assert entry["results"][0]["match"] is True and entry["operating_point"]["max_fmr"] == 1e-5


def _log_entry(svc: Svc, seq: int) -> dict[str, Any]:
    page = svc["admin"].get("/v1/log", params={"after": seq - 1, "limit": 1}).json()
    assert page["entries"][0]["seq"] == seq
    return dict(page["entries"][0])


def _head(svc: Svc) -> int:
    return int(svc["admin"].get("/v1/log", params={"limit": 1}).json()["head"]["seq"])


def _last_entry(svc: Svc) -> dict[str, Any]:
    return _log_entry(svc, _head(svc))


def test_server_failed_searches_and_compares_are_logged_too(svc: Svc) -> None:
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (90, 90, 90)).save(blank, "PNG")
    c = svc["alpha_search"]
    _error(c.post("/v1/collections/alpha/search/image", files={"image": blank.getvalue()},
                  data={"purpose": "case 12"}), 422, "no_face")
    entry = _last_entry(svc)
    assert entry["action"] == "search_faces_by_image" and entry["purpose"] == "case 12"
    assert entry["probe"] == {"image_sha256": hashlib.sha256(blank.getvalue()).hexdigest()}
    assert entry["error"]["code"] == "no_face" and entry["results"] == [] and entry["operating_point"] is None
    assert entry["key_id"] == svc.tokens["alpha_search"][3:15]
    _error(c.post("/v1/collections/alpha/search/face", json={"face_id": "no-such-face", "purpose": "case 12"}),
           404, "face_not_found")
    entry = _last_entry(svc)
    assert entry["probe"] == {"face_id": "no-such-face"} and entry["error"]["code"] == "face_not_found"
    files = {"image_a": portrait("C001079").read_bytes(), "image_b": blank.getvalue()}
    _error(c.post("/v1/compare", files=files, data={"purpose": "case 12"}), 422, "no_face")
    entry = _last_entry(svc)
    assert entry["action"] == "compare" and entry["error"]["code"] == "no_face" and entry["results"] == []
    # refused before any search ran (no purpose): nothing to log
    seq = _head(svc)
    _error(c.post("/v1/collections/alpha/search/image", files={"image": blank.getvalue()}), 422, "purpose_required")
    assert _head(svc) == seq


def test_server_a_timed_out_search_is_logged_as_the_timeout_it_answered(svc: Svc,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    services = svc.live.app.state.services
    face_id = svc["alpha_read"].get("/v1/collections/alpha/faces", params={"limit": 1}).json()["faces"][0]["face_id"]
    real = services.engine.search_faces

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(services.engine, "search_faces", slow)
    monkeypatch.setattr(services.calls, "timeout_s", 0.2)
    _error(svc["alpha_search"].post("/v1/collections/alpha/search/face", json={"face_id": face_id, "purpose": "t"}),
           503, "timeout")
    seq = _head(svc)
    entry = _last_entry(svc)
    assert entry["probe"] == {"face_id": face_id} and entry["error"]["code"] == "timeout" and entry["results"] == []
    assert services.calls.wait_idle(10)  # the abandoned search finished in the background ...
    assert _head(svc) == seq  # ... and logged nothing: its results were never shown


def test_server_collection_listing_describe_and_faces(svc: Svc) -> None:
    assert set(svc["admin"].get("/v1/collections").json()["collections"]) >= {"alpha", "beta", "conc"}
    info = svc["alpha_read"].get("/v1/collections/alpha").json()
    assert info["face_count"] == len(PEOPLE) and info["person_count"] == len(PEOPLE)
    page = svc["alpha_read"].get("/v1/collections/alpha/faces", params={"limit": 5}).json()
    assert len(page["faces"]) == 5 and page["next_token"]
    rest = svc["alpha_read"].get("/v1/collections/alpha/faces", params={"next_token": page["next_token"]}).json()
    assert len(rest["faces"]) == len(PEOPLE) - 5 and rest["next_token"] is None
    persons = svc["alpha_read"].get("/v1/collections/alpha/persons").json()["persons"]
    assert {p["person_id"] for p in persons} == set(PEOPLE) and all(p["faces"] == 1 for p in persons)
    again = svc["alpha_index"].post("/v1/collections/alpha/faces", files={"image": portrait(PEOPLE[1]).read_bytes()},
                                    data={"person_id": PEOPLE[1], "external_image_id": portrait(PEOPLE[1]).name})
    assert again.json()["already_indexed"] is True


def test_server_searches_by_image_face_and_person_are_logged(svc: Svc) -> None:
    probe = portrait("C001079", "b")
    r = svc["alpha_search"].post("/v1/collections/alpha/search/image", files={"image": probe.read_bytes()},
                                 data={"purpose": "case 11", "max_results": "3"})
    assert r.status_code == 200, r.text
    doc = r.json()
    (result,) = doc["results"]
    assert [m["person_id"] for m in result["matches"]] == ["C001079"]
    assert result["collection_size"] == len(PEOPLE) and result["searched_face"]["bbox"]
    entry = _log_entry(svc, doc["log_entry"]["seq"])
    assert entry["action"] == "search_faces_by_image" and entry["collection"] == "alpha"
    assert entry["probe"] == {"image_sha256": hashlib.sha256(probe.read_bytes()).hexdigest()}
    assert entry["collection_size"] == len(PEOPLE) and entry["purpose"] == "case 11"
    assert entry["operating_point"]["threshold"] == result["threshold"]
    assert entry["options"]["max_results"] == 3
    cand = entry["results"][0]["candidates"][0]
    assert cand["face_id"] == result["matches"][0]["face_id"] and cand["person_id"] == "C001079"
    assert cand["score"] == result["matches"][0]["score"] and "bbox" not in cand
    assert entry["key_id"] == svc.tokens["alpha_search"][3:15]

    face_id = result["matches"][0]["face_id"]
    by_face = svc["alpha_search"].post("/v1/collections/alpha/search/face",
                                       json={"face_id": face_id, "purpose": "case 11"})
    assert by_face.status_code == 200 and by_face.json()["searched_face_id"] == face_id
    assert face_id not in [m["face_id"] for m in by_face.json()["matches"]]
    assert _log_entry(svc, by_face.json()["log_entry"]["seq"])["probe"] == {"face_id": face_id}

    persons = svc["alpha_search"].post("/v1/collections/alpha/search/persons",
                                       json={"image": _b64(probe), "purpose": "case 11", "max_fmr": 1e-4})
    assert [m["person_id"] for m in persons.json()["matches"]] == ["C001079"]
    assert _log_entry(svc, persons.json()["log_entry"]["seq"])["action"] == "search_persons_by_image"
    _error(svc["alpha_search"].post("/v1/collections/alpha/search/image", files={"image": probe.read_bytes()}),
           422, "purpose_required")


def test_server_scopes_are_enforced(svc: Svc) -> None:
    img = {"image": portrait("B000444", "b").read_bytes()}
    search, index, read = svc["alpha_search"], svc["alpha_index"], svc["alpha_read"]
    _error(search.post("/v1/collections/alpha/faces", files=img), 403, "forbidden")
    _error(search.get("/v1/collections/alpha/faces"), 403, "forbidden")
    _error(index.post("/v1/collections/alpha/search/image", files=img, data={"purpose": "x"}), 403, "forbidden")
    _error(read.post("/v1/collections/alpha/search/face", json={"face_id": "x", "purpose": "x"}), 403, "forbidden")
    _error(read.delete("/v1/collections/alpha"), 403, "forbidden")
    _error(index.delete("/v1/collections/alpha/persons/B000444"), 403, "forbidden")
    _error(index.post("/v1/collections/alpha/faces/delete", json={"face_ids": ["x"]}), 403, "forbidden")
    _error(search.post("/v1/collections", json={"name": "zeta"}), 403, "forbidden")
    _error(svc["alpha_admin"].get("/v1/log"), 403, "forbidden")
    # a key sees only its own collections ...
    assert search.get("/v1/collections").json() == {"collections": ["alpha"]}
    assert svc["beta_all"].get("/v1/collections").json() == {"collections": ["beta"]}
    # ... and another collection answers exactly like one that does not exist
    for name in ("beta", "no-such-collection"):
        calls = [search.get(f"/v1/collections/{name}"),
                 search.post(f"/v1/collections/{name}/search/image", files=img, data={"purpose": "x"}),
                 svc["alpha_admin"].delete(f"/v1/collections/{name}"),
                 svc["alpha_admin"].post(f"/v1/collections/{name}/faces", files=img),
                 read.get(f"/v1/collections/{name}/persons")]
        for r in calls:
            assert _error(r, 404, "collection_not_found") == f"no collection named {name!r}"
    assert svc["beta_all"].get("/v1/collections/beta").status_code == 200
    assert svc["admin"].get("/v1/collections/no-such-collection").json() == calls[0].json()


def test_server_person_association_and_erasure(svc: Svc) -> None:
    adm, idx = svc["alpha_admin"], svc["alpha_index"]
    r = idx.post("/v1/collections/alpha/faces", files={"image": portrait("C001082", "b").read_bytes()},
                 data={"external_image_id": "extra.jpg"})
    face_id = r.json()["indexed"][0]["face_id"]
    assert idx.post("/v1/collections/alpha/persons", json={"person_id": "tmp-person"}).status_code == 201
    assoc = idx.post("/v1/collections/alpha/persons/tmp-person/associate", json={"face_ids": [face_id, "nope"]})
    assert assoc.json() == {"associated": [face_id], "unknown": ["nope"]}
    dis = idx.post("/v1/collections/alpha/persons/tmp-person/disassociate", json={"face_ids": [face_id]})
    assert dis.json() == {"disassociated": [face_id], "unchanged": []}
    idx.post("/v1/collections/alpha/persons/C001082/associate", json={"face_ids": [face_id]})
    found = svc["alpha_search"].post("/v1/collections/alpha/search/image",
                                     files={"image": portrait("C001082", "b").read_bytes()}, data={"purpose": "p"})
    seq = found.json()["log_entry"]["seq"]
    assert {m["person_id"] for m in found.json()["results"][0]["matches"]} == {"C001082"}
    erased = adm.delete("/v1/collections/alpha/persons/C001082")
    assert erased.status_code == 200 and len(erased.json()["deleted_faces"]) == 2
    after = svc["alpha_search"].post("/v1/collections/alpha/search/image",
                                     files={"image": portrait("C001082", "b").read_bytes()}, data={"purpose": "p"})
    assert after.json()["results"][0]["matches"] == []
    _error(adm.delete("/v1/collections/alpha/persons/C001082"), 404, "person_not_found")
    _error(idx.post("/v1/collections/alpha/persons/ghost/associate", json={"face_ids": [face_id]}),
           404, "person_not_found")
    assert adm.delete("/v1/collections/alpha/persons/tmp-person").json()["deleted_faces"] == []
    # the log still names the erased faces by id, and holds no image, embedding or box
    text = json.dumps(_log_entry(svc, seq))
    assert face_id in text and "embedding" not in text and "bbox" not in text and "landmarks" not in text
    # put the person back for the other tests
    idx.post("/v1/collections/alpha/faces", files={"image": portrait("C001082").read_bytes()},
             data={"person_id": "C001082", "external_image_id": portrait("C001082").name})


def test_server_delete_faces(svc: Svc) -> None:
    idx, adm = svc["alpha_index"], svc["alpha_admin"]
    ids = [idx.post("/v1/collections/alpha/faces", files={"image": portrait("D000601", "b").read_bytes()},
                    data={"external_image_id": f"del-{i}"}).json()["indexed"][0]["face_id"] for i in range(2)]
    assert len(set(ids)) == 2
    one = adm.delete(f"/v1/collections/alpha/faces/{ids[0]}").json()
    assert one.pop("receipt")["face_ids"] == [ids[0]] and one == {"deleted": [ids[0]], "unknown": []}
    _error(adm.delete(f"/v1/collections/alpha/faces/{ids[0]}"), 404, "face_not_found")
    batch = adm.post("/v1/collections/alpha/faces/delete", json={"face_ids": [ids[1], "nope"]}).json()
    assert batch.pop("receipt")["face_ids"] == [ids[1]] and batch == {"deleted": [ids[1]], "unknown": ["nope"]}
    _error(svc["alpha_search"].post("/v1/collections/alpha/search/face", json={"face_id": ids[1], "purpose": "x"}),
           404, "face_not_found")


def test_server_collection_admin_deletes_its_collection_and_its_grant_ends(svc: Svc) -> None:
    d = svc["delta_admin"]
    assert d.get("/v1/collections").json() == {"collections": ["delta"]}
    assert d.get("/v1/collections/delta").json()["face_count"] == 0
    assert "delta" not in svc["alpha_admin"].get("/v1/collections").json()["collections"]
    assert d.delete("/v1/collections/delta").json() == {"deleted": "delta"}
    _error(d.get("/v1/collections/delta"), 404, "collection_not_found")
    _error(d.delete("/v1/collections/delta"), 404, "collection_not_found")
    # the grant was for that collection: it may not make a new one of the name, nor see one an admin makes
    _error(d.post("/v1/collections", json={"name": "delta"}), 403, "forbidden")
    assert svc["admin"].post("/v1/collections", json={"name": "delta"}).status_code == 201
    assert _error(d.get("/v1/collections/delta"), 404, "collection_not_found") == "no collection named 'delta'"
    assert d.get("/v1/collections").json() == {"collections": []}


def _png_claiming(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (1, 1), 0).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def test_server_bad_uploads_get_their_own_4xx(svc: Svc) -> None:
    c = svc["admin"]
    url = "/v1/collections/alpha/search/image"
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (90, 90, 90)).save(blank, "PNG")
    _error(c.post(url, files={"image": b"not an image"}, data={"purpose": "x"}), 400, "invalid_image")
    truncated = portrait("B000444").read_bytes()[:3000]
    _error(c.post("/v1/detect", files={"image": truncated}), 400, "invalid_image")
    _error(c.post(url, files={"image": b""}, data={"purpose": "x"}), 400, "invalid_image")
    _error(c.post(url, json={"image": "!!not base64!!", "purpose": "x"}), 400, "invalid_image")
    _error(c.post(url, files={"image": blank.getvalue()}, data={"purpose": "x"}), 422, "no_face")
    _error(c.post("/v1/detect", files={"image": _png_claiming(30000, 30000)}), 413, "image_too_large")
    _error(c.post(url, content=b"\xff\xd8" + b"0" * (3 * LIMIT), headers={"content-type": "image/jpeg"}),
           413, "request_too_large")
    _error(c.post(url, files={"image": b"0" * (3 * LIMIT)}, data={"purpose": "x"}), 413, "request_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while reading, not after
        yield b'{"image": "'
        for _ in range(3 * LIMIT // 65536):
            yield b"A" * 65536

    _error(c.post(url, content=chunks(), headers={"content-type": "application/json"}), 413, "request_too_large")
    _error(c.post(url, content=b"x", headers={"content-type": "text/plain"}), 415, "unsupported_media_type")
    _error(c.post(url, json={"purpose": "x"}), 422, "invalid_request")
    _error(c.post(url, json={"image": _b64(portrait("B000444")), "purpose": "x", "max_results": 0}),
           422, "invalid_request")
    _error(c.post(url, json={"image": _b64(portrait("B000444")), "purpose": "x", "colour": "red"}),
           422, "invalid_request")
    _error(c.post(url, files={"image": portrait("B000444").read_bytes()}, data={"purpose": "x", "max_fmr": "2"}),
           422, "invalid_request")
    _error(c.post("/v1/collections", json={"name": "../etc"}), 422, "invalid_argument")
    _error(c.post("/v1/collections", json={"name": "alpha"}), 409, "collection_exists")
    _error(c.get("/v1/no-such-route"), 404, "not_found")
    _error(c.put("/v1/collections"), 405, "method_not_allowed")
    assert c.get("/health").status_code == 200  # the connection pool survives the refusals


def test_server_concurrent_indexing_and_searching(svc: Svc) -> None:
    c = svc["admin"]
    for person in PEOPLE:
        c.post("/v1/collections/conc/faces", files={"image": portrait(person).read_bytes()},
               data={"person_id": person, "external_image_id": f"{person}_a"})
    errors: list[str] = []
    start = threading.Barrier(5)

    def searcher(person: str) -> int:
        client = httpx.Client(base_url=svc.live.url, headers={"Authorization": f"Bearer {svc.tokens['admin']}"},
                              timeout=120)
        start.wait()
        found = 0
        for _ in range(4):  # purpose optional on "conc"
            r = client.post("/v1/collections/conc/search/image", files={"image": portrait(person, "b").read_bytes()})
            if r.status_code != 200:
                errors.append(r.text)
                continue
            found += person in {m["person_id"] for m in r.json()["results"][0]["matches"]}
        return found

    def indexer() -> int:
        client = httpx.Client(base_url=svc.live.url, headers={"Authorization": f"Bearer {svc.tokens['admin']}"},
                              timeout=120)
        start.wait()
        n = 0
        for person in PEOPLE:
            r = client.post("/v1/collections/conc/faces", json={"image": _b64(portrait(person, "b")),
                                                                "person_id": person})
            if r.status_code != 200:
                errors.append(r.text)
            n += len(r.json().get("indexed", []))
        return n

    with ThreadPoolExecutor(max_workers=5) as pool:
        searches = [pool.submit(searcher, p) for p in PEOPLE[:4]]
        indexed = pool.submit(indexer)
        assert indexed.result() == len(PEOPLE)
        assert [s.result() for s in searches] == [4, 4, 4, 4]
    assert errors == []
    assert c.get("/v1/collections/conc").json()["face_count"] == 2 * len(PEOPLE)


def _copy_log(svc: Svc, dest: Path) -> Path:
    src = sqlite3.connect(svc.home / "service" / "search-log.sqlite")
    dst = sqlite3.connect(dest)
    src.backup(dst)
    src.close()
    dst.close()
    return dest


def _tamper(path: Path, *sql: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER entries_append_only_update")
    conn.execute("DROP TRIGGER entries_append_only_delete")
    for statement in sql:
        conn.execute(statement)
    conn.close()


def _verify(path: Path, home: Path) -> tuple[bool, int | None, str | None]:
    r = verify_log(path, public_keys=[LogPublicKey.load(home / "service" / "log-signing.pub")])
    return r.ok, r.first_bad_seq, r.problem


def test_server_search_log_detects_tampering(svc: Svc, tmp_path: Path) -> None:
    for i in range(4):  # at least a few entries of our own
        svc["admin"].post("/v1/collections/alpha/search/face", json={
            "face_id": svc["admin"].get("/v1/collections/alpha/faces").json()["faces"][0]["face_id"],
            "purpose": f"tamper test {i}"})
    pristine = _copy_log(svc, tmp_path / "pristine.sqlite")
    ok, _, _ = _verify(pristine, svc.home)
    head = verify_log(pristine).head_seq
    assert ok and head is not None and head >= 4
    n = head
    # the database refuses edits while its triggers are there
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        sqlite3.connect(pristine).execute("DELETE FROM entries WHERE seq = 1")

    cases = {
        "edited": (["UPDATE entries SET body = replace(body, '\"purpose\":\"tamper test 1\"', "
                    "'\"purpose\":\"innocent\"') WHERE seq = " + str(n - 2)], n - 2, "edited"),
        "edited-and-rehashed": ([f"UPDATE entries SET body = replace(body, 'tamper test 1', 'innocent') "
                                 f"WHERE seq = {n - 2}"], None, None),
        "deleted": ([f"DELETE FROM entries WHERE seq = {n - 1}"], n - 1, "missing"),
        "reordered": ([f"UPDATE entries SET seq = -1 WHERE seq = {n - 1}",
                       f"UPDATE entries SET seq = {n - 1} WHERE seq = {n - 2}",
                       f"UPDATE entries SET seq = {n - 2} WHERE seq = -1"], n - 2, "reordered"),
        "truncated": ([f"DELETE FROM entries WHERE seq >= {n - 1}"], n - 1, "removed from the end"),
        "head deleted": (["DELETE FROM head"], n, "no head"),
    }
    for name, (sql, bad_seq, words) in cases.items():
        path = shutil.copy(pristine, tmp_path / f"{name}.sqlite")
        if name == "edited-and-rehashed":  # a forger who also recomputes the edited entry's hash
            conn = sqlite3.connect(path)
            body = conn.execute("SELECT body FROM entries WHERE seq = ?", (n - 2,)).fetchone()[0]
            conn.close()
            new_body = body.replace("tamper test 1", "innocent")
            digest = hashlib.sha256(new_body.encode()).hexdigest()
            sql = [f"UPDATE entries SET body = '{new_body}', hash = '{digest}' WHERE seq = {n - 2}"]
            bad_seq, words = n - 2, "signature does not verify"  # the forger lacks the signing key
        _tamper(Path(path), *sql)
        ok, first_bad, problem = _verify(Path(path), svc.home)
        assert not ok and first_bad == bad_seq and words in (problem or ""), (name, first_bad, problem)

    # the CLI: verify names the first bad entry and exits 1; export + verify --file work on a copy
    home = tmp_path / "cli-home"
    (home / "service").mkdir(parents=True)
    shutil.copy(svc.home / "service" / "log-signing.pub", home / "service" / "log-signing.pub")
    shutil.copy(tmp_path / "deleted.sqlite", home / "service" / "search-log.sqlite")
    result = CliRunner().invoke(main, ["log", "verify", "--home", str(home)])
    assert result.exit_code == 1 and f"BROKEN at entry {n - 1}" in result.output
    shutil.copy(pristine, home / "service" / "search-log.sqlite")
    result = CliRunner().invoke(main, ["log", "verify", "--home", str(home), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["ok"] and report["entries"] == n
    anchor = f"{report['head_seq']}:{report['head_hash']}"
    assert CliRunner().invoke(main, ["log", "verify", "--home", str(home), "--anchor", anchor]).exit_code == 0
    export = tmp_path / "export.jsonl"
    assert CliRunner().invoke(main, ["log", "export", "--home", str(home), "--after", "1",
                                     "-o", str(export)]).exit_code == 0
    lines = export.read_text().splitlines()
    assert len(lines) == n - 1 and json.loads(lines[0])["seq"] == 2
    pub = str(home / "service" / "log-signing.pub")
    assert CliRunner().invoke(main, ["log", "verify", "--file", str(export), "--public-key", pub]).exit_code == 0
    edited = json.loads(lines[1])
    edited["purpose"] = "something else"
    lines[1] = json.dumps(edited)
    export.write_text("\n".join(lines) + "\n")
    assert CliRunner().invoke(main, ["log", "verify", "--file", str(export), "--public-key", pub]).exit_code == 1
    since = CliRunner().invoke(main, ["log", "export", "--home", str(home), "--since", "2999-01-01"])
    assert since.exit_code == 0 and since.output == ""


def test_server_log_write_failure_returns_an_error_not_results(svc: Svc, monkeypatch: pytest.MonkeyPatch) -> None:
    from facelens.server.errors import SearchLogError

    def broken(record: Any) -> Any:
        raise SearchLogError("disk full")

    monkeypatch.setattr(svc.live.app.state.services.log, "append", broken)
    r = svc["alpha_search"].post("/v1/collections/alpha/search/image",
                                 files={"image": portrait("B000444").read_bytes()}, data={"purpose": "x"})
    assert "disk full" in _error(r, 503, "search_log_unavailable") and "matches" not in r.text


def test_server_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    make_key(tmp_path, name="k", admin=True)
    assert CliRunner().invoke(main, ["collection", "create", "x", "--home", str(tmp_path)]).exit_code == 0
    token = make_key(tmp_path, name="limited", grants={"x": ["read"]})
    live = LiveService(ServerSettings(home=tmp_path, rate_limit=0.5, rate_burst=2), engine=_FakeEngine())
    client = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"})
    try:
        assert [client.get("/v1/collections").status_code for _ in range(2)] == [200, 200]
        r = client.get("/v1/collections")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited" and r.headers["retry-after"] == "2"
    finally:
        live.stop()
    clock = [0.0]
    bucket = RateLimiter(rate=1.0, burst=1, clock=lambda: clock[0])
    assert bucket.acquire("k") == 0.0 and bucket.acquire("k") == pytest.approx(1.0)
    clock[0] = 1.0
    assert bucket.acquire("k") == 0.0 and bucket.acquire("other") == 0.0


def test_server_engine_calls_time_out_with_503() -> None:
    import time

    import anyio

    from facelens.server.deps import EngineCalls
    from facelens.server.errors import ApiError

    calls = EngineCalls(workers=1, timeout_s=0.2)
    assert anyio.run(calls, lambda: 42) == 42
    with pytest.raises(ApiError) as err:
        anyio.run(calls, lambda: time.sleep(1.0))
    assert err.value.status == 503 and err.value.code == "timeout" and err.value.headers["Retry-After"] == "1"
    assert calls.running == 1 and calls.wait_idle(5) and calls.running == 0  # the abandoned call finished


class _FakeEngine:
    """Enough of an Engine for routes that only list collections (no models loaded)."""

    model_name, model_sha256, embedding_size = "fake", "0" * 64, 512

    def list_collections(self) -> list[str]:
        return ["x", "y"]

    def close(self) -> None:
        pass


def test_server_refuses_insecure_setups(tmp_path: Path) -> None:
    with pytest.raises(InsecureSettingsError, match="no API key exists"):
        create_app(ServerSettings(home=tmp_path / "empty"), engine=_FakeEngine())
    with pytest.raises(InsecureSettingsError, match="loopback"):
        ServerSettings(home=tmp_path, host="0.0.0.0", insecure_no_auth=True)
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--home", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no API key exists" in result.output and "keys create" in result.output
    result = CliRunner().invoke(main, ["serve", "--host", "192.0.2.1", "--insecure-no-auth", "--home", str(tmp_path)])
    assert result.exit_code == 2 and "loopback" in result.output
    # on loopback, --insecure-no-auth serves without keys, every caller acting as admin
    live = LiveService(ServerSettings(home=tmp_path / "empty", insecure_no_auth=True), engine=_FakeEngine())
    try:
        assert httpx.get(f"{live.url}/v1/collections").json() == {"collections": ["x", "y"]}
    finally:
        live.stop()


def test_server_cli_keys_commands(tmp_path: Path) -> None:
    run = CliRunner()
    assert run.invoke(main, ["collection", "create", "c1", "--home", str(tmp_path)]).exit_code == 0
    made = run.invoke(main, ["keys", "create", "--collection", "c1", "--scope", "search", "--scope", "read",
                             "--name", "analyst", "--home", str(tmp_path), "--json"])
    assert made.exit_code == 0, made.output
    key = json.loads(made.output)
    assert key["grants"] == {"c1": ["read", "search"]} and key["token"].startswith(f"fl_{key['key_id']}_")
    plain = run.invoke(main, ["keys", "create", "--admin", "--home", str(tmp_path)])
    assert plain.exit_code == 0 and plain.stdout.strip().startswith("fl_") and "shown only now" in plain.stderr
    listed = json.loads(run.invoke(main, ["keys", "list", "--home", str(tmp_path), "--json"]).output)["keys"]
    assert len(listed) == 2 and all("token" not in k for k in listed)
    assert key["token"] not in (tmp_path / "service" / "keys.sqlite").read_bytes().decode("latin-1")
    assert run.invoke(main, ["keys", "revoke", key["key_id"], "--home", str(tmp_path)]).exit_code == 0
    again = run.invoke(main, ["keys", "revoke", key["key_id"], "--home", str(tmp_path)])
    assert again.exit_code == 3 and "already revoked" in again.output
    assert run.invoke(main, ["keys", "create", "--collection", "c1", "--home", str(tmp_path)]).exit_code == 2
    assert run.invoke(main, ["keys", "create", "--collection", "../x", "--scope", "read",
                             "--home", str(tmp_path)]).exit_code == 2


@pytest.mark.parametrize("command", ["serve", "keys create", "keys list", "keys revoke", "log verify", "log export"])
def test_server_cli_commands_are_documented(command: str) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert f"## facelens {command}" in doc


def test_server_graceful_shutdown_keeps_acknowledged_writes(tmp_path: Path) -> None:
    make_key(tmp_path, name="admin", admin=True)
    token = make_key(tmp_path, name="w", admin=True)
    live = LiveService(ServerSettings(home=tmp_path, workers=2, rate_limit=0))
    client = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert client.post("/v1/collections", json={"name": "g"}).status_code == 201
    acknowledged: list[str] = []
    started = threading.Event()

    def writer() -> None:
        c = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        for p in sorted(PORTRAITS.glob("*.jpg")):
            started.set()
            try:
                r = c.post("/v1/collections/g/faces", files={"image": p.read_bytes()},
                           data={"external_image_id": p.name})
            except httpx.TransportError:
                return  # the service has stopped taking requests
            if r.status_code != 200:
                return
            acknowledged.extend(f["face_id"] for f in r.json()["indexed"])

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    started.wait()
    while len(acknowledged) < 3:
        threading.Event().wait(0.05)
    live.stop()  # as on SIGTERM, while requests are in flight
    for t in threads:
        t.join()
    assert not live.thread.is_alive()
    from facelens.store import FaceStore, collection_dir

    store = FaceStore.open(collection_dir(tmp_path, "g"), name="g")
    try:
        stored, _ = store.list_faces(limit=1000)
        assert set(acknowledged) <= {f.face_id for f in stored}
    finally:
        store.close()


def test_server_hot_responses_have_exactly_their_documented_shape(svc: Svc) -> None:
    """The searches, detect and compare answer dicts rendered by orjson, without FastAPI's validation through
    their response models: each answer must be what that validation would have sent, field for field."""
    from facelens.server.schemas import ComparisonOut, DetectOut, SearchImageOut, SearchOneOut

    client = svc["admin"]
    probe = portrait("C001079", "b").read_bytes()
    other = portrait("B000444", "b").read_bytes()
    image = client.post("/v1/collections/alpha/search/image", files={"image": probe},
                        data={"purpose": "shape", "max_results": "3"})
    investigation = client.post("/v1/collections/alpha/search/image", files={"image": probe},
                                data={"purpose": "shape", "mode": "investigate", "max_candidates": "3"})
    face_id = image.json()["results"][0]["matches"][0]["face_id"]
    answers: list[tuple[Any, httpx.Response]] = [
        (SearchImageOut, image), (SearchImageOut, investigation),
        (SearchOneOut, client.post("/v1/collections/alpha/search/face", json={"face_id": face_id, "purpose": "s"})),
        (SearchOneOut, client.post("/v1/collections/alpha/search/persons", files={"image": probe},
                                   data={"purpose": "shape"})),
        (DetectOut, client.post("/v1/detect", files={"image": other})),
        (ComparisonOut, client.post("/v1/compare", files={"image_a": probe, "image_b": other},
                                    data={"purpose": "shape"})),
    ]
    for model, r in answers:
        assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
        body = r.json()
        shape: TypeAdapter[Any] = TypeAdapter(model)  # SearchOneOut is a union: a type adapter, as FastAPI uses
        assert shape.dump_python(shape.validate_python(body), mode="json", by_alias=True) == body, r.url
    assert investigation.json()["results"][0]["candidates"], "the investigation found nothing to check"
