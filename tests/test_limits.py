"""What one request may cost: faces per image, engine threads, unauthenticated bodies, slow headers and
bodies, JSON nesting, browser requests to a service without keys, purposes. Over real HTTP: a real
``facelens serve`` process (its memory read from /proc), or LiveService where the test needs the app."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from PIL import Image

import facelens
from facelens.errors import InvalidArgumentError
from facelens.pipeline import FaceList, check_cancelled
from facelens.server import ServerSettings
from facelens.server.deps import EngineCalls
from facelens.server.errors import ApiError
from facelens.server.limits import MAX_JSON_DEPTH, json_depth

from ._service import LiveService, make_key
from .conftest import portrait

ROOT = Path(__file__).resolve().parents[1]
REQUEST_TIMEOUT = 2.0
HEADER_TIMEOUT = 2.0


def mosaic(side: int = 32, tile: int = 24) -> bytes:
    """A JPEG of side x side copies of a bundled portrait's face, each tile x tile pixels (32 x 32 x 24 px:
    about a thousand faces the detector finds, in 250 KB)."""
    im = Image.open(portrait("A000368")).convert("RGB")
    w, h = im.size
    s = min(w, h)
    face = im.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)).resize((tile, tile))
    canvas = Image.new("RGB", (side * tile, side * tile))
    for i in range(side):
        for j in range(side):
            canvas.paste(face, (i * tile, j * tile))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=80)
    return buf.getvalue()


@pytest.fixture(scope="module")
def faces_jpeg() -> bytes:
    return mosaic()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


@dataclass
class Served:
    """A ``facelens serve`` process with an admin key."""

    proc: subprocess.Popen[bytes]
    port: int
    token: str
    home: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, headers={"Authorization": f"Bearer {self.token}"})

    def rss_kb(self) -> int:
        return _memory_kb(self.proc.pid, "VmRSS")


def start_serve(home: Path, *options: str) -> Served:
    """``facelens serve`` on a free port of 127.0.0.1 with an admin key and a collection ``m``."""
    token = make_key(home, name="admin", admin=True)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "facelens", "serve", "--home", str(home), "--port", str(port), "--workers", "1",
         "--threads", "1", "--rate-limit", "0", "--purpose-default", "optional", "--no-access-log", *options],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    s = Served(proc, port, token, home)
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{s.url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_serve(s)
            raise RuntimeError(f"facelens serve did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.2)
    assert s.client().post("/v1/collections", json={"name": "m"}).status_code == 201
    return s


def stop_serve(s: Served) -> None:
    s.proc.terminate()
    try:
        s.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        s.proc.wait()


@pytest.fixture(scope="module", params=[("--http", "auto"), ("--http", "h11", "--loop", "asyncio")],
                ids=["httptools-uvloop", "h11-asyncio"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The service with short request and head timeouts, with either HTTP parser and event loop: the
    default (httptools and uvloop when installed) and the pure-Python ones."""
    s = start_serve(tmp_path_factory.mktemp("limits-home"), "--request-timeout", str(REQUEST_TIMEOUT),
                    "--header-timeout", str(HEADER_TIMEOUT), *request.param)
    yield s
    stop_serve(s)


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _read_status(sock: socket.socket, timeout: float) -> tuple[int, float]:
    """The status code of the response on ``sock`` and how long it took to come (0: closed without one)."""
    start = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    took = time.monotonic() - start
    return (int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0), took


def _closed_within(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``timeout`` seconds, reading what it sends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(4096):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


# -- faces per image --------------------------------------------------------------------------------

def test_limits_engine_keeps_the_largest_faces_and_counts_the_others(faces_jpeg: bytes, tmp_path: Path) -> None:
    engine = facelens.Engine(threads=1, home=str(tmp_path), max_faces_per_image=5)
    try:
        everything = facelens.Engine(threads=1, max_faces_per_image=10_000).detect(faces_jpeg)
        assert len(everything) > 500, "the mosaic must hold hundreds of faces for this test to mean anything"
        faces = engine.detect(faces_jpeg)
        assert isinstance(faces, FaceList) and len(faces) == 5
        assert faces.faces_over_limit == len(everything) - 5
        assert engine.detect(faces_jpeg, max_faces=2).faces_over_limit == 0  # the caller's own limit is not counted
        # index: quality is judged on the aligned crops first, and only the faces to be stored are embedded
        embedded: list[int] = []
        recognizer = engine.backend.recognizer  # type: ignore[union-attr]
        real_embed = recognizer.embed

        def counting_embed(*args: object) -> object:
            out = real_embed(*args)  # type: ignore[arg-type]
            embedded.append(len(out))
            return out

        recognizer.embed = counting_embed  # type: ignore[method-assign]
        engine.create_collection("m")
        tiny = engine.index_faces("m", faces_jpeg)
        assert tiny.indexed == () and len(tiny.unindexed) == 5 and tiny.faces_over_limit == len(everything) - 5
        assert sum(embedded) == 0, "faces refused by the quality filter were embedded"
        one = engine.index_faces("m", portrait("B000444"))
        assert len(one.indexed) == 1 and sum(embedded) == 1 and one.to_dict()["faces_over_limit"] == 0
    finally:
        engine.close()
    with pytest.raises(facelens.InvalidArgumentError, match="max_faces_per_image"):
        facelens.EngineConfig(max_faces_per_image=0)
    assert facelens.EngineConfig.from_env({"FACELENS_MAX_FACES_PER_IMAGE": "7"}).max_faces_per_image == 7


def test_limits_a_mosaic_of_a_thousand_faces_costs_what_a_hundred_do(tmp_path: Path, faces_jpeg: bytes) -> None:
    """Before: one all_faces search of this image took 27 s of CPU and 4.2 GB of memory."""
    served = start_serve(tmp_path, "--request-timeout", "120")
    try:
        _mosaic_requests(served, faces_jpeg)
    finally:
        stop_serve(served)


def _mosaic_requests(served: Served, faces_jpeg: bytes) -> None:
    c = served.client()
    detected = c.post("/v1/detect", files={"image": faces_jpeg})
    assert detected.status_code == 200, detected.text
    body = detected.json()
    assert len(body["faces"]) == 100 and body["faces_over_limit"] > 500
    start = time.monotonic()
    searched = c.post("/v1/collections/m/search/image", files={"image": faces_jpeg}, data={"all_faces": "true"})
    assert searched.status_code == 200, searched.text
    assert len(searched.json()["results"]) == 100 and searched.json()["faces_over_limit"] == body["faces_over_limit"]
    indexed = c.post("/v1/collections/m/faces", files={"image": faces_jpeg}).json()
    assert indexed["faces_over_limit"] == body["faces_over_limit"] and len(indexed["unindexed"]) == 100
    assert time.monotonic() - start < 60
    peak_mb = _memory_kb(served.proc.pid, "VmHWM") / 1024
    assert peak_mb < 1024, f"the service peaked at {peak_mb:.0f} MB"


# -- engine threads ---------------------------------------------------------------------------------

def test_limits_an_abandoned_call_keeps_its_worker_slot_until_its_thread_returns() -> None:
    calls = EngineCalls(workers=1, timeout_s=0.3)
    ran: list[str] = []
    peak = [0]

    def stubborn() -> None:  # cannot be interrupted: one long model call
        peak[0] = max(peak[0], calls.running)
        time.sleep(1.5)
        ran.append("stubborn")

    def quick() -> str:
        peak[0] = max(peak[0], calls.running)
        ran.append("quick")
        return "done"

    async def scenario() -> None:
        with pytest.raises(ApiError) as first:
            await calls(stubborn)
        assert first.value.status == 503
        with pytest.raises(ApiError) as second:  # the only slot is still held by the abandoned thread
            await calls(quick)
        assert second.value.status == 503 and ran == []
        await anyio.to_thread.run_sync(calls.wait_idle, 10.0)
        await anyio.sleep(0.05)  # the slot is given back on the event loop
        assert await calls(quick) == "done"

    anyio.run(scenario)
    assert ran == ["stubborn", "quick"] and peak[0] == 1


def test_limits_a_timed_out_call_is_cancelled_between_stages() -> None:
    calls = EngineCalls(workers=1, timeout_s=0.3)
    stopped = threading.Event()

    def long_work() -> None:
        try:
            for _ in range(1000):  # 10 s of work, checking for cancellation as the pipeline does
                check_cancelled()
                time.sleep(0.01)
        finally:
            stopped.set()

    with pytest.raises(ApiError):
        anyio.run(calls, long_work)
    assert stopped.wait(3.0), "the abandoned call ran on"
    assert calls.wait_idle(2.0)


def test_limits_a_timed_out_search_stops_instead_of_running_on(tmp_path: Path, faces_jpeg: bytes) -> None:
    """A real slow call: an all_faces search of a thousand faces (the cap raised to let it take ~25 s)."""
    make_key(tmp_path, name="admin", admin=True)
    token = make_key(tmp_path, name="s", admin=True)
    engine = facelens.Engine(threads=1, home=str(tmp_path), max_faces_per_image=10_000)
    engine.create_collection("m")
    live = LiveService(ServerSettings(home=tmp_path, workers=1, rate_limit=0, request_timeout_s=0.5,
                                      purpose_default="optional"), engine=engine)
    calls: EngineCalls = live.app.state.services.calls
    peak = [0]
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            peak[0] = max(peak[0], calls.running)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        c = httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {token}"})
        r = c.post("/v1/collections/m/search/image", files={"image": faces_jpeg}, data={"all_faces": "true"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "timeout", r.text
        answered = time.monotonic()
        assert calls.wait_idle(8.0), "the abandoned search ran on"
        stopped_after = time.monotonic() - answered
        # meanwhile a second request could not start a second engine thread
        assert peak[0] == 1
        assert stopped_after < 8.0
    finally:
        watching.set()
        watcher.join()
        live.stop()


# -- before the body: keys, and bounded bodies ------------------------------------------------------

def _stalled_upload(port: int, token: str | None, path: str = "/v1/detect") -> socket.socket:
    sock = _raw(port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\n"
                  f"Content-Length: 10000000\r\n\r\n").encode() + b'{"image": "' + b"A" * 65536)
    return sock


def test_limits_unauthenticated_uploads_are_refused_before_their_body(served: Served) -> None:
    before = served.rss_kb()
    socks = [_stalled_upload(served.port, None) for _ in range(20)]
    try:
        answers = [_read_status(s, 5.0) for s in socks]
        assert all(status == 401 for status, _ in answers), answers
        assert max(took for _, took in answers) < 2.0
        grown_mb = (served.rss_kb() - before) / 1024
        assert grown_mb < 40, f"the service grew by {grown_mb:.0f} MB for 20 stalled unauthenticated uploads"
        # refused bodies are not read on forever: the connections close within the head timeout
        assert all(_closed_within(s, HEADER_TIMEOUT + 3) for s in socks)
    finally:
        for s in socks:
            s.close()
    # a pydantic body route is guarded the same way
    sock = _stalled_upload(served.port, None, "/v1/collections")
    assert _read_status(sock, 5.0)[0] == 401
    sock.close()


def test_limits_slow_bodies_get_408_and_their_connection_closed(served: Served) -> None:
    before = served.rss_kb()
    socks = [_stalled_upload(served.port, served.token) for _ in range(20)]
    try:
        answers = [_read_status(s, REQUEST_TIMEOUT + 5) for s in socks]
        assert all(status == 408 for status, _ in answers), answers
        assert all(_closed_within(s, 2.0) for s in socks)
        grown_mb = (served.rss_kb() - before) / 1024
        assert grown_mb < 60, f"the service grew by {grown_mb:.0f} MB for 20 stalled uploads"
    finally:
        for s in socks:
            s.close()
    assert served.client().get("/v1/collections").status_code == 200  # still serving


def test_limits_the_default_parser_is_httptools_with_the_head_deadline() -> None:
    pytest.importorskip("httptools")
    from facelens.server.limits import HeaderTimeoutHttpToolsProtocol, HeaderTimeoutProtocol, http_protocol

    assert http_protocol() is HeaderTimeoutHttpToolsProtocol
    assert http_protocol("h11") is HeaderTimeoutProtocol
    with pytest.raises(InvalidArgumentError, match="unknown HTTP protocol"):
        http_protocol("h2")


def test_limits_huge_request_heads_are_refused(served: Served) -> None:
    """h11 refuses a head over 16 KB; httptools has no limit of its own (a 10 MB header was buffered whole
    until the head deadline), the service adds the same: 400 at once, and the connection closed."""
    for size in (100_000, 10_000_000):
        sock = _raw(served.port)
        try:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * size)
            except (BrokenPipeError, ConnectionResetError):
                assert size > 100_000  # closed while sending: refused before the whole head came
            status, took = _read_status(sock, 5.0)
            assert status == 400 or (status == 0 and size > 100_000), status
            assert took < HEADER_TIMEOUT, took  # not merely cut off by the head deadline
            assert _closed_within(sock, 5.0)
        finally:
            sock.close()
    r = served.client().get("/health", headers={"X-Padding": "a" * 8000})  # a head of a few KB is fine
    assert r.status_code == 200


def test_limits_slow_headers_are_cut_off(served: Served) -> None:
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nX-Padding: {'a' * 40}\r\n\r\n".encode()
    sock = _raw(served.port)
    start = time.monotonic()
    sent = 0
    try:
        for byte in head:  # a byte every 0.2 s: the whole head would take 15 s
            sock.sendall(bytes([byte]))
            sent += 1
            sock.settimeout(0.2)
            try:
                if not sock.recv(4096):
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
        took = time.monotonic() - start
        assert sent < len(head) and took < HEADER_TIMEOUT + 2, (sent, took)
    finally:
        sock.close()
    # the same on a kept-alive connection, for the head of its next request
    sock = _raw(served.port)
    try:
        sock.sendall(head)
        assert _read_status(sock, 5.0)[0] == 200
        sock.sendall(head[:10])  # stops the keep-alive timer; then nothing more
        start = time.monotonic()
        assert _closed_within(sock, HEADER_TIMEOUT + 3)
        assert time.monotonic() - start < HEADER_TIMEOUT + 3
    finally:
        sock.close()


# -- JSON nesting and purposes ----------------------------------------------------------------------

def test_limits_json_depth_scan() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{"}], "c": "\\"]]"}') == 3
    assert json_depth(b"") == 0 and json_depth(b"[" * 100_000) == 100_000
    assert json_depth(b'"' + b"[" * 1000 + b'"') == 0


def test_limits_deeply_nested_json_is_refused_with_422(served: Served) -> None:
    c = served.client()
    deep = b"[" * 100_000 + b"]" * 100_000
    for path, body in [("/v1/detect", b'{"image": ' + deep + b"}"), ("/v1/detect", deep),
                       ("/v1/collections", b'{"name": ' + deep + b"}"),
                       ("/v1/collections/m/persons", deep), ("/v1/collections/m/faces/delete", deep),
                       ("/v1/collections/m/search/face", b'{"face_id": "x", "purpose": ' + deep + b"}")]:
        r = c.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (path, r.text)
        assert str(MAX_JSON_DEPTH) in r.json()["error"]["message"]
    ok = "[" * 3 + "]" * 3  # shallow nesting reaches validation as before
    r = c.post("/v1/collections/m/faces/delete", content=f'{{"face_ids": {ok}}}',
               headers={"content-type": "application/json"})
    assert r.status_code == 422 and "face_ids" in r.text


def test_limits_purposes_with_control_characters_are_refused(served: Served) -> None:
    c = served.client()
    image = portrait("B000444").read_bytes()
    for purpose in ["case 1\nforged line", "bell\x07", "del\x7f", "nul\x00"]:
        r = c.post("/v1/collections/m/search/image", files={"image": image}, data={"purpose": purpose})
        assert r.status_code == 422 and "control characters" in r.json()["error"]["message"], r.text
        r = c.post("/v1/compare", json={"image_a": base64.b64encode(image).decode(),
                                        "image_b": base64.b64encode(image).decode(), "purpose": purpose})
        assert r.status_code == 422 and "control characters" in r.json()["error"]["message"], r.text
    r = c.post("/v1/collections/m/search/face", json={"face_id": "nope", "purpose": "tab\tinside"})
    assert r.status_code == 422, r.text
    fine = c.post("/v1/collections/m/search/image", files={"image": image}, data={"purpose": "case 2024-0173 (é)"})
    assert fine.status_code == 200, fine.text


def test_limits_keyed_service_serves_non_browser_clients_with_any_origin(served: Served) -> None:
    r = served.client().get("/v1/collections", headers={"Origin": "https://elsewhere.example",
                                                        "Host": "facelens.internal:8000"})
    assert r.status_code == 200


# -- a service without keys, and web pages ----------------------------------------------------------

def test_limits_no_auth_service_refuses_what_a_web_page_could_send(tmp_path: Path) -> None:
    engine = facelens.Engine(threads=1, home=str(tmp_path))
    live = LiveService(ServerSettings(home=tmp_path, insecure_no_auth=True, rate_limit=0,
                                      purpose_default="optional"), engine=engine)
    image = portrait("B000444").read_bytes()
    try:
        c = httpx.Client(base_url=live.url, timeout=60)

        def refused(r: httpx.Response, words: str) -> None:
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
            assert words in r.json()["error"]["message"], r.text

        # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1
        refused(c.get("/v1/collections", headers={"Host": f"evil.example:{live.port}"}), "loopback")
        refused(c.get("/health", headers={"Host": "evil.example"}), "loopback")
        # cross-site requests, with or without a form
        refused(c.post("/v1/collections", json={"name": "x"}, headers={"Origin": "https://evil.example"}),
                "cross-origin")
        refused(c.get("/v1/collections", headers={"Sec-Fetch-Site": "cross-site"}), "cross-site")
        refused(c.post("/v1/collections/x/faces", files={"image": image}), "X-Facelens")
        refused(c.post("/v1/detect", content=b"{}", headers={"content-type": "text/plain"}), "X-Facelens")
        # what a local program sends is served
        for host in (f"127.0.0.1:{live.port}", f"localhost:{live.port}", "[::1]", "localhost"):
            assert c.get("/v1/collections", headers={"Host": host}).status_code == 200, host
        assert c.post("/v1/collections", json={"name": "x"}).status_code == 201
        same = c.post("/v1/collections", json={"name": "y"}, headers={"Origin": live.url,
                                                                      "Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 201, same.text
        indexed = c.post("/v1/collections/x/faces", files={"image": image}, headers={"X-Facelens": "1"})
        assert indexed.status_code == 200 and len(indexed.json()["indexed"]) == 1, indexed.text
        from_docs = c.post("/v1/detect", files={"image": image}, headers={"Origin": live.url,  # the /docs page
                                                                          "Sec-Fetch-Site": "same-origin"})
        assert from_docs.status_code == 200 and len(from_docs.json()["faces"]) == 1, from_docs.text
        refused(c.post("/v1/detect", files={"image": image}, headers={"Sec-Fetch-Site": "same-site"}), "same-site")
    finally:
        live.stop()
