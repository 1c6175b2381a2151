"""The console over real HTTP (uvicorn on 127.0.0.1, httpx): sessions, cookies, CSRF, origin checks,
security headers, escaping, scopes, revocation, paging. The browser tests are test_console_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from facelens.console.sessions import SessionStore
from facelens.server import ServerSettings
from facelens.server.keys import KeyStore
from tests._service import LiveService, make_key

PORTRAITS = Path(__file__).resolve().parent.parent / "examples" / "portraits"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="module")
def admin_token(home: Path) -> str:
    return make_key(home, name="admin <b>&amp; co</b>", admin=True)


@pytest.fixture(scope="module")
def service(home: Path, admin_token: str) -> Iterator[LiveService]:
    svc = LiveService(ServerSettings(home=home, workers=2, rate_limit=0, purpose_default="optional"))
    try:
        yield svc
    finally:
        svc.stop()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def sign_in(service: LiveService, token: str) -> tuple[httpx.Client, str]:
    """A client signed in with ``token``, and its session's CSRF token."""
    c = httpx.Client(base_url=service.url, follow_redirects=False, timeout=60)
    page = c.get("/console/sign-in")
    r = c.post("/console/sign-in", data={"csrf_token": _csrf(page.text), "api_key": token})
    assert r.status_code == 303 and r.headers["location"] == "/console/", r.text
    dash = c.get("/console/")
    assert dash.status_code == 200
    return c, _csrf(dash.text)


def test_pages_need_a_session_and_root_leads_to_the_console(service: LiveService) -> None:
    c = httpx.Client(base_url=service.url, follow_redirects=False)
    assert c.get("/").headers["location"] == "/console/"
    for path in ("/console/", "/console/log", "/console/keys", "/console/c/x", "/console/search"):
        r = c.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/console/sign-in", path
    r = c.post("/console/collections", data={"name": "x", "csrf_token": "x"})
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"


def test_sign_in_sets_a_strict_httponly_session_cookie_and_strict_headers(service: LiveService,
                                                                          admin_token: str) -> None:
    c = httpx.Client(base_url=service.url, follow_redirects=False)
    page = c.get("/console/sign-in")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp and page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text and " style=" not in page.text and "onclick" not in page.text
    r = c.post("/console/sign-in", data={"csrf_token": _csrf(page.text), "api_key": admin_token})
    cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("facelens_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http on loopback; https gets Secure (next test)
    assert admin_token not in cookie  # the cookie is a session token, not the API key
    sessions = (Path(service.settings.home) / "service" / "console-sessions.sqlite").read_bytes()
    assert admin_token.encode() not in sessions


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files), valid for a day."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_the_session_cookie_is_secure_over_tls(home: Path, admin_token: str, tmp_path: Path) -> None:
    import ssl
    import threading

    import uvicorn

    from facelens.server import create_app
    from tests._browser import free_port

    cert, key = _self_signed(tmp_path)
    port = free_port()
    app = create_app(ServerSettings(home=home, workers=1, rate_limit=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           ssl_certfile=str(cert), ssl_keyfile=str(key)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            threading.Event().wait(0.02)
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(cert)),
                          follow_redirects=False) as c:
            page = c.get("/console/sign-in")
            assert "Secure" in page.headers["set-cookie"]  # the sign-in form's token too
            r = c.post("/console/sign-in", data={"csrf_token": _csrf(page.text), "api_key": admin_token})
            cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("facelens_console="))
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def test_a_wrong_key_or_a_missing_sign_in_token_opens_nothing(service: LiveService, admin_token: str) -> None:
    c = httpx.Client(base_url=service.url, follow_redirects=False)
    page = c.get("/console/sign-in")
    r = c.post("/console/sign-in", data={"csrf_token": _csrf(page.text), "api_key": "fl_000000000000_nope"})
    assert r.status_code == 401 and "invalid or has been revoked" in r.text
    assert not any(v.startswith("facelens_console=") for v in r.headers.get_list("set-cookie"))
    fresh = httpx.Client(base_url=service.url, follow_redirects=False)  # no sign-in cookie: login CSRF refused
    r = fresh.post("/console/sign-in", data={"csrf_token": _csrf(page.text), "api_key": admin_token})
    assert r.status_code == 403 and "csrf_failed" in r.text


def test_every_form_refuses_a_missing_or_forged_csrf_token_and_another_origin(service: LiveService,
                                                                               admin_token: str) -> None:
    c, csrf = sign_in(service, admin_token)
    forms = ["/console/collections", "/console/c/demo/enrol", "/console/c/demo/erase", "/console/c/demo/delete",
             "/console/detect", "/console/compare", "/console/search", "/console/log/verify", "/console/keys",
             "/console/keys/000000000000/revoke", "/console/sign-out"]
    for path in forms:
        for data in ({}, {"csrf_token": "forged"}):
            r = c.post(path, data={**data, "name": "made-by-forgery"})
            assert r.status_code == 403 and "csrf_failed" in r.text, (path, data, r.status_code)
        r = c.post(path, data={"csrf_token": csrf, "name": "made-by-forgery"},
                   headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "csrf_failed" in r.text, path
    assert c.get("/console/").status_code == 200  # still signed in: sign-out was refused too
    api = httpx.get(f"{service.url}/v1/collections", headers={"Authorization": f"Bearer {admin_token}"}).json()
    assert "made-by-forgery" not in api["collections"]


def test_names_are_escaped(service: LiveService, admin_token: str) -> None:
    c, _ = sign_in(service, admin_token)
    page = c.get("/console/").text
    assert "admin &lt;b&gt;&amp;amp; co&lt;/b&gt;" in page and "<b>&amp; co</b>" not in page


def test_scopes_decide_what_a_key_may_do(service: LiveService, admin_token: str, home: Path) -> None:
    admin, csrf = sign_in(service, admin_token)
    for name in ("scoped", "other"):
        assert admin.post("/console/collections", data={"csrf_token": csrf, "name": name}).status_code == 303
    image = (PORTRAITS / "B001266_a.jpg").read_bytes()
    r = admin.post("/console/c/scoped/enrol", data={"csrf_token": csrf, "person_id": "B001266"},
                   files=[("images", ("b.jpg", image, "image/jpeg"))])
    assert r.status_code == 200 and "1 face(s) enrolled for B001266" in r.text

    reader, rcsrf = sign_in(service, make_key(home, name="reader", grants={"scoped": ["read"]}))
    assert "B001266" in reader.get("/console/c/scoped").text
    assert reader.get("/console/c/other").status_code == 404  # invisible, as in the API
    r = reader.post("/console/c/scoped/enrol", data={"csrf_token": rcsrf},
                    files=[("images", ("b.jpg", image, "image/jpeg"))])
    assert r.status_code == 200 and "lacks the &#39;index&#39; scope" in r.text  # per file, as each is refused
    r = reader.post("/console/c/scoped/erase", data={"csrf_token": rcsrf, "person_id": "B001266"})
    assert r.status_code == 403 and "admin" in r.text
    r = reader.post("/console/search", data={"csrf_token": rcsrf, "collection": "scoped"},
                    files=[("image", ("p.jpg", image, "image/jpeg"))])
    assert r.status_code == 403 and "search" in r.text
    for path in ("/console/log", "/console/keys", "/console/audit"):
        assert reader.get(path).status_code == 403, path
    r = reader.post("/console/keys", data={"csrf_token": rcsrf, "name": "escalate", "admin": "on"})
    assert r.status_code == 403
    r = reader.post("/console/collections", data={"csrf_token": rcsrf, "name": "mine"})
    assert r.status_code == 403
    assert "B001266" in admin.get("/console/c/scoped").text  # nothing erased


def test_revoking_a_key_ends_its_sessions_and_is_logged_with_the_admin_as_actor(
        service: LiveService, admin_token: str, home: Path) -> None:
    admin, csrf = sign_in(service, admin_token)
    r = admin.post("/console/keys", data={"csrf_token": csrf, "name": "temp", "admin": "on"})
    assert r.status_code == 201
    token = re.search(r'id="new-token">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    temp, _ = sign_in(service, token)
    key_id = token[3:15]
    r = admin.post(f"/console/keys/{key_id}/revoke", data={"csrf_token": csrf})
    assert r.status_code == 303
    r = temp.get("/console/")
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"
    log = admin.get("/console/log?action=key_revoked").text
    assert "key_revoked" in log and "admin &lt;b&gt;" in log  # who revoked it: the console's key
    store = KeyStore.open(home)
    try:
        assert store.get(key_id) is None
    finally:
        store.close()


def test_sign_out_ends_the_session_on_the_server(service: LiveService, admin_token: str) -> None:
    c, csrf = sign_in(service, admin_token)
    cookie = c.cookies["facelens_console"]
    assert c.post("/console/sign-out", data={"csrf_token": csrf}).status_code == 303
    replay = httpx.Client(base_url=service.url, cookies={"facelens_console": cookie}, follow_redirects=False)
    assert replay.get("/console/").status_code == 303  # the old cookie opens nothing


def test_sessions_expire(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.sqlite", hours=1)
    token, session = store.create("abc", now=1000.0)
    assert store.get(token, now=1000.0 + 3599) == session
    assert store.get(token, now=1000.0 + 3601) is None
    assert store.get("not-a-token", now=1000.0) is None


def test_persons_and_faces_are_paged(service: LiveService, admin_token: str) -> None:
    admin, csrf = sign_in(service, admin_token)
    assert admin.post("/console/collections", data={"csrf_token": csrf, "name": "paged"}).status_code == 303
    api = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
    for i in range(120):
        assert api.post("/v1/collections/paged/persons", json={"person_id": f"p{i:03d}"}).status_code == 201
    first = admin.get("/console/c/paged").text
    shown = re.findall(r"<tr><td>(p\d{3})</td>", first)
    assert shown == [f"p{i:03d}" for i in range(50)]
    after = re.search(r'id="persons-next" href="/console/c/paged\?persons_after=(p\d+)', first)
    assert after and after.group(1) == "p049"
    third = admin.get("/console/c/paged?persons_after=p099").text
    assert re.findall(r"<tr><td>(p\d{3})</td>", third) == [f"p{i:03d}" for i in range(100, 120)]
    assert 'id="persons-next"' not in third


def test_audit_reports_are_framed_in_a_sandbox_and_only_listed_names_open(service: LiveService,
                                                                          admin_token: str) -> None:
    folder = Path(service.settings.home) / "audits" / "lfw-2026"
    folder.mkdir(parents=True)
    (folder / "report.html").write_text("<html><body><h1>audit of lfw</h1></body></html>")
    admin, _ = sign_in(service, admin_token)
    page = admin.get("/console/audit?report=lfw-2026").text
    assert 'src="/console/audit/lfw-2026/report.html" sandbox' in page
    r = admin.get("/console/audit/lfw-2026/report.html")
    assert r.status_code == 200 and "audit of lfw" in r.text
    assert r.headers["content-security-policy"].startswith("sandbox;")
    assert admin.get("/console/audit/..%2F..%2Fservice/report.html").status_code == 404
    assert admin.get("/console/audit/nope/report.html").status_code == 404


def test_a_collection_admin_changes_the_policy_and_the_change_is_logged_with_the_key(
        service: LiveService, admin_token: str, home: Path) -> None:
    admin, csrf = sign_in(service, admin_token)
    assert admin.post("/console/collections", data={"csrf_token": csrf, "name": "ruled"}).status_code == 303
    page = admin.get("/console/c/ruled").text
    r = admin.post("/console/c/ruled/policy", data={"csrf_token": csrf, "allowed_modes": ["identify"],
                                                     "purpose_required": "on", "review_required": "on",
                                                     "face_crops": "on", "retention_days": "7", "max_fpir": "0.001"})
    assert r.status_code == 303, r.text
    page = admin.get("/console/c/ruled").text
    assert re.search(r'value="investigate" id="policy-investigate"\s*>', page)  # unchecked now
    assert re.search(r'id="policy-purpose" checked', page) and 'value="7.0"' in page
    log = admin.get("/console/log?action=policy_changed&collection=ruled").text
    assert "policy_changed" in log and "admin &lt;b&gt;" in log
    r = admin.post("/console/c/ruled/policy", data={"csrf_token": csrf, "max_fpir": "lots"})
    assert r.status_code == 422 and "max_fpir" in r.text
    r = admin.post("/console/c/ruled/policy", data={"csrf_token": csrf, "allowed_modes": []})
    assert r.status_code == 422 and "allowed_modes" in r.text  # the core's refusal, shown as the API shows it
    reader, rcsrf = sign_in(service, make_key(home, name="ruled reader", grants={"ruled": ["read", "search"]}))
    assert 'id="save-policy"' not in reader.get("/console/c/ruled").text
    r = reader.post("/console/c/ruled/policy", data={"csrf_token": rcsrf, "allowed_modes": ["investigate"]})
    assert r.status_code == 403


def test_thumbnails_follow_the_policy_and_an_erasure_shows_its_receipt(service: LiveService,
                                                                         admin_token: str) -> None:
    admin, csrf = sign_in(service, admin_token)
    assert admin.post("/console/collections", data={"csrf_token": csrf, "name": "erasable"}).status_code == 303
    for photo in ("B001266_a.jpg", "B001266_b.jpg"):
        r = admin.post("/console/c/erasable/enrol", data={"csrf_token": csrf, "person_id": "B001266"},
                       files=[("images", (photo, (PORTRAITS / photo).read_bytes(), "image/jpeg"))])
        assert r.status_code == 200 and "1 face(s) enrolled for B001266" in r.text, r.text
    page = admin.get("/console/c/erasable").text
    crops = re.findall(r'src="(/console/c/erasable/faces/[^"]+/crop.jpg)"', page)
    assert len(crops) == 2 and 'id="no-crops"' not in page  # the policy keeps crops by default
    for url in crops:
        r = admin.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"

    r = admin.post("/console/c/erasable/erase", data={"csrf_token": csrf, "person_id": "B001266"})
    assert r.status_code == 200, r.text
    text = r.text
    receipt_id = re.search(r'id="receipt-id">([^<]+)<', text).group(1)  # type: ignore[union-attr]
    seq = int(re.search(r'id="erased-seq">(\d+)<', text).group(1))  # type: ignore[union-attr]
    assert re.search(r'id="erased-count">2<', text) and re.search(r'id="erased-crops">2<', text)
    assert re.search(r'id="erased-person">B001266<', text) and 'id="gone-from-disk"' in text
    assert f'href="/console/log?before={seq + 1}"' in text
    # the receipt is the signed log's: the entry at that seq records this erasure and this receipt
    api = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
    entry = api.get("/v1/log", params={"after": seq - 1, "limit": 1}).json()["entries"][0]
    assert entry["action"] == "person_erased" and entry["receipt_id"] == receipt_id
    assert entry["seq"] == seq and entry["hash"][:16] in text
    for url in crops:  # the crops went with the faces
        assert admin.get(url).status_code == 404

    # a policy that keeps no crops: no thumbnails asked for (none would load)
    r = admin.post("/console/c/erasable/policy", data={"csrf_token": csrf, "allowed_modes": ["identify", "investigate"],
                                                        "review_required": "on", "retention_days": "30"})
    assert r.status_code == 303, r.text
    r = admin.post("/console/c/erasable/enrol", data={"csrf_token": csrf, "person_id": "B001266"},
                   files=[("images", ("a.jpg", (PORTRAITS / "B001266_a.jpg").read_bytes(), "image/jpeg"))])
    assert r.status_code == 200
    page = admin.get("/console/c/erasable").text
    assert "crop.jpg" not in page and 'id="no-crops"' in page and "B001266" in page


def _reader(service: LiveService, admin_token: str, home: Path, name: str) -> str:
    """A key that is not a global admin: the read scope on collection "plain" (made if missing)."""
    httpx.post(f"{service.url}/v1/collections", json={"name": "plain"}, timeout=60,
               headers={"Authorization": f"Bearer {admin_token}"})  # 201, or 409 when made before
    return make_key(home, name=name, grants={"plain": ["read"]})


def _portrait_folders(root: Path) -> Path:
    """The bundled portraits as a one-folder-per-person dataset (8 people, 2 photos each)."""
    import shutil

    for photo in sorted(PORTRAITS.glob("*.jpg")):
        person = root / photo.stem.split("_")[0]
        person.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, person / photo.name)
    return root


def _wait_job(client: httpx.Client, name: str, timeout: float = 300) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/console/audit/jobs/{name}.json").json()
        if job["state"] != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def test_an_audit_runs_from_the_console_one_at_a_time_with_progress_and_its_report(
        service: LiveService, admin_token: str, home: Path, tmp_path: Path) -> None:
    admin, csrf = sign_in(service, admin_token)
    dataset = _portrait_folders(tmp_path / "portraits")
    empty = tmp_path / "empty"
    empty.mkdir()
    refusals = [({"dataset": "portraits"}, 422, "absolute path on the server"),
                ({"dataset": str(tmp_path / "nowhere")}, 422, "no file or folder"),
                ({"dataset": str(dataset), "name": "../up"}, 422, "a report name is"),
                ({"dataset": str(dataset), "max_fmr": "2"}, 422, "max_fmr"),
                ({"dataset": str(dataset), "kind": "congress"}, 422, "members.csv"),
                ({"dataset": str(dataset), "kind": "pictures"}, 422, "layout is one of"),
                ({"dataset": str(empty)}, 422, "no images found")]
    for fields, status, words in refusals:
        r = admin.post("/console/audit", data={"csrf_token": csrf, **fields})
        assert r.status_code == status and words in r.text and 'id="audit-problem"' in r.text, (fields, r.text[-800:])
        assert f'value="{fields["dataset"]}"' in r.text  # the form keeps what was typed
    assert not (home / "audits" / "up").exists()

    r = admin.post("/console/audit", data={"csrf_token": csrf, "dataset": str(dataset), "name": "portraits"})
    assert r.status_code == 303 and r.headers["location"] == "/console/audit?job=portraits#job-portraits", r.text
    second = admin.post("/console/audit", data={"csrf_token": csrf, "dataset": str(dataset), "name": "second"})
    page = admin.get("/console/audit").text
    job = _wait_job(admin, "portraits")
    assert second.status_code == 409 and "an audit is running (portraits)" in second.text
    assert 'id="job-portraits"' in page and "/console/audit/jobs" not in page  # polled by the script, not inline
    assert job["state"] == "done", job
    assert job["images"] == 16 and job["done"] == job["total"] and job["report"] == "/console/audit?report=portraits"
    assert job["by"] == "admin <b>&amp; co</b>"
    page = admin.get("/console/audit").text
    assert 'href="/console/audit?report=portraits#shown">open the report' in page
    report = admin.get("/console/audit/portraits/report.html")
    assert report.status_code == 200 and "112" in report.text  # 112 impostor comparisons of 8 people's photos
    again = admin.post("/console/audit", data={"csrf_token": csrf, "dataset": str(dataset), "name": "portraits"})
    assert again.status_code == 409 and "exists" in again.text

    reader, rcsrf = sign_in(service, _reader(service, admin_token, home, "audit reader"))
    assert reader.post("/console/audit", data={"csrf_token": rcsrf, "dataset": str(dataset)}).status_code == 403
    assert reader.get("/console/audit/jobs/portraits.json").status_code == 403


def test_an_audit_whose_process_died_is_shown_stopped_and_a_held_lock_refuses_another(tmp_path: Path) -> None:
    import json
    import signal
    import subprocess
    import sys

    from facelens.console.audits import AuditConflictError, read_job, start_audit

    root = tmp_path / "audits"
    (root / "old").mkdir(parents=True)
    (root / "old" / "job.json").write_text(json.dumps({
        "name": "old", "dataset": "/data/x", "kind": None, "max_fmr": None, "images": 10, "by": "k",
        "started": "2026-12-01T00:00:00+00:00", "state": "running", "stage": "embed x", "done": 3, "total": 10}))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(root / '.running.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(120)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        job = read_job(root, "old")
        assert job is not None and job.state == "running" and job.percent == 30  # another process runs it
        with pytest.raises(AuditConflictError, match="an audit is running"):
            start_audit(None, root, dataset=str(_portrait_folders(tmp_path / "ds")), name="new",  # type: ignore[arg-type]
                        kind=None, max_fmr=None, by="k")
        assert not (root / "new").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    job = read_job(root, "old")  # the kernel dropped the dead process's lock: nobody runs it
    assert job is not None and job.state == "stopped" and "ended before it finished" in (job.error or "")


def test_the_transparency_report_is_read_in_the_console_by_global_admins(service: LiveService, admin_token: str,
                                                                         home: Path) -> None:
    admin, csrf = sign_in(service, admin_token)
    page = admin.get("/console/audit/transparency")
    assert page.status_code == 200, page.text
    assert "The signed log verifies" in page.text and 'id="t-searches"' in page.text
    assert 'src="/console/audit/transparency.html" sandbox' in page.text
    api = httpx.get(f"{service.url}/v1/reports/transparency", headers={"Authorization": f"Bearer {admin_token}"},
                    timeout=60).json()
    searches = re.search(r'id="t-searches">([\d,]+) ', page.text).group(1)  # type: ignore[union-attr]
    assert int(searches.replace(",", "")) == api["totals"]["searches"]  # the API's numbers
    framed = admin.get("/console/audit/transparency.html?since=2026-01-01")
    assert framed.status_code == 200 and "<html" in framed.text.lower()
    assert framed.headers["content-security-policy"].startswith("sandbox;")
    future = admin.get("/console/audit/transparency?since=2999-01-01&until=2998-01-01")
    assert future.status_code == 422 and "must be before until" in future.text
    reader, _ = sign_in(service, _reader(service, admin_token, home, "transparency reader"))
    assert reader.get("/console/audit/transparency").status_code == 403
    assert reader.get("/console/audit/transparency.html").status_code == 403


def test_the_search_form_says_what_the_collection_policy_requires(service: LiveService, admin_token: str,
                                                                   home: Path) -> None:
    admin, csrf = sign_in(service, admin_token)
    api = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
    for name in ("guarded", "open"):
        assert api.post("/v1/collections", json={"name": name}).status_code == 201
    r = api.patch("/v1/collections/guarded/policy", json={"allowed_modes": ["identify"], "purpose_required": True,
                                                          "max_fpir": 0.001})
    assert r.status_code == 200, r.text
    page = admin.get("/console/search?collection=guarded").text
    assert re.search(r'id="mode-investigate"\s+disabled>', page) and re.search(r'id="mode-identify"\s+checked>', page)
    assert re.search(r'id="purpose"[^>]* required', page) and 'max="0.001"' in page
    assert "Policy of guarded: identify only; a purpose is required; identifications at a false-positive " \
           "identification rate of at most 0.001." in page
    rules = admin.get("/console/c/guarded/search-rules.json").json()
    assert rules["allowed_modes"] == ["identify"] and rules["purpose_required"] is True and rules["max_fpir"] == 0.001
    assert admin.get("/console/c/open/search-rules.json").json()["purpose_required"] is False
    page = admin.get("/console/search?collection=open").text
    assert not re.search(r'id="purpose"[^>]* required', page) and "disabled>" not in page

    # a client that sends the form anyway (no browser checks): the API refuses it, as the form said
    probe = ("p.jpg", (PORTRAITS / "C000380_b.jpg").read_bytes(), "image/jpeg")
    for fields, words in (({"mode": "investigate", "purpose": "case 1"}, "allows only identify"),
                          ({"mode": "identify"}, "requires a purpose"),
                          ({"mode": "identify", "purpose": "case 1", "max_fpir": "0.01"}, "max_fpir")):
        r = admin.post("/console/search", data={"csrf_token": csrf, "collection": "guarded", **fields},
                       files=[("image", probe)])
        assert r.status_code in (403, 422) and words in r.text, (fields, r.status_code, r.text[-600:])
    stranger, _ = sign_in(service, _reader(service, admin_token, home, "policy stranger"))
    assert stranger.get("/console/c/guarded/search-rules.json").status_code == 404  # invisible, as in the API
