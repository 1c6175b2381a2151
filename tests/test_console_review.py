"""The console's review queue (the API's review routes): a searcher's leads wait
for another person, who sees probe and candidate side by side and decides with a reason; four eyes and
final decisions are the API's, shown on the page. Over real HTTP, and in a real browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from facelens.server import ServerSettings
from tests._browser import MISSING
from tests._service import LiveService, make_key
from tests.test_console import sign_in

PORTRAITS = Path(__file__).resolve().parent.parent / "examples" / "portraits"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("review-console")
    admin = make_key(home, name="admin", admin=True)
    svc = LiveService(ServerSettings(home=home, workers=2, rate_limit=0, purpose_default="optional"))
    try:
        api = httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        assert api.post("/v1/collections", json={"name": "watch"}).status_code == 201
        for photo in sorted(PORTRAITS.glob("*_a.jpg")):
            r = api.post("/v1/collections/watch/faces", files={"image": photo.read_bytes()},
                         data={"person_id": photo.stem.split("_")[0]})
            assert r.status_code == 200, r.text
        searcher = make_key(home, name="sam (searcher)", grants={"watch": ["search"]})
        reviewer = make_key(home, name="rita (reviewer)", grants={"watch": ["review", "read"]})
        yield {"svc": svc, "admin": admin, "searcher": searcher, "reviewer": reviewer}
    finally:
        svc.stop()


def _investigate(client: httpx.Client, csrf: str, photo: str, purpose: str) -> str:
    r = client.post("/console/search", data={"csrf_token": csrf, "collection": "watch", "mode": "investigate",
                                             "purpose": purpose},
                    files=[("image", ("probe.jpg", (PORTRAITS / photo).read_bytes(), "image/jpeg"))])
    assert r.status_code == 200, r.text
    return r.text


def test_leads_wait_for_a_second_person_who_confirms_with_a_reason(setup: dict[str, Any]) -> None:
    svc = setup["svc"]
    sam, scsrf = sign_in(svc, setup["searcher"])
    _investigate(sam, scsrf, "B000444_b.jpg", "case R-1")
    mine = sam.get("/console/review").text
    links = re.findall(r'href="/console/review/watch/([0-9a-f]+)"', mine)
    assert links, mine
    item = sam.get(f"/console/review/watch/{links[0]}").text
    assert 'id="four-eyes"' in item and 'id="confirm"' not in item  # the searcher may not decide
    r = sam.post(f"/console/review/watch/{links[0]}/decide",
                 data={"csrf_token": scsrf, "decision": "confirm", "reason": "looks like him"})
    assert r.status_code == 403

    rita, rcsrf = sign_in(svc, setup["reviewer"])
    queue = rita.get("/console/review?collection=watch&state=pending").text
    assert "sam (searcher)" in queue and "case R-1" in queue
    first = links[0]
    page = rita.get(f"/console/review/watch/{first}").text
    assert 'id="candidate-person">B000444<' in page  # the reviewer sees who
    probe = rita.get(f"/console/review/watch/{first}/probe.jpg")
    assert probe.status_code == 200 and probe.content[:2] == b"\xff\xd8"
    face = re.search(r'src="(/console/c/watch/faces/[^"]+/crop.jpg)"', page)
    assert face and rita.get(face.group(1)).content[:2] == b"\xff\xd8"
    r = rita.post(f"/console/review/watch/{first}/decide", data={"csrf_token": rcsrf, "decision": "confirm"})
    assert r.status_code == 422  # a reason is required
    r = rita.post(f"/console/review/watch/{first}/decide",
                  data={"csrf_token": rcsrf, "decision": "confirm", "reason": "same ears, same scar"})
    assert r.status_code == 303
    page = rita.get(f"/console/review/watch/{first}").text
    assert 'id="item-state">confirmed<' in page and "same ears, same scar" in page
    r = rita.post(f"/console/review/watch/{first}/decide",
                  data={"csrf_token": rcsrf, "decision": "reject", "reason": "changed my mind"})
    assert r.status_code == 409  # final
    admin, _ = sign_in(svc, setup["admin"])
    log = admin.get("/console/log?action=review_decided").text
    assert "rita (reviewer)" in log


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
def test_a_reviewer_works_the_queue_in_a_browser(setup: dict[str, Any]) -> None:
    from tests._browser import browser
    from tests.test_console_browser import _console_errors, _el, _els, _sign_in, _wait

    svc = setup["svc"]
    sam, scsrf = sign_in(svc, setup["searcher"])
    _investigate(sam, scsrf, "C001082_b.jpg", "case R-2")
    d = browser()
    try:
        _sign_in(d, svc.url, setup["reviewer"])
        d.get(f"{svc.url}/console/review?collection=watch&state=pending")
        rows = [r for r in _els(d, "#review-items tbody tr") if "case R-2" in r.text]
        assert rows
        rows[0].find_element("css selector", "a").click()
        _wait(d, "#item")
        assert _el(d, "#candidate-person").text == "C001082"
        loaded = d.execute_script("return [...document.querySelectorAll('img.crop')].map(i => i.naturalWidth)")
        assert len(loaded) == 2 and all(w > 0 for w in loaded)  # both crops shown
        _el(d, "#reason").send_keys("same face shape and hairline")
        _el(d, "#confirm").click()
        _wait(d, "#decision")
        assert _el(d, "#item-state").text == "confirmed"
        assert "rita (reviewer)" in _el(d, "#decision").text
        assert _console_errors(d) == []
    finally:
        d.quit()
