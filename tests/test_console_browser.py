"""The console in a real browser (headless Chromium, Selenium) against a real ``facelens serve`` process:
what a new user does, from sign-in to sign-out, and the refusals (CSRF, scopes). Skipped, saying how to
install the browser, where no Chromium is found."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._browser import MISSING, browser, serving
from tests._service import make_key

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

PORTRAITS = Path(__file__).resolve().parent.parent / "examples" / "portraits"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-home")


@pytest.fixture(scope="module")
def admin_token(home: Path) -> str:
    return make_key(home, name="alice (admin)", admin=True)


@pytest.fixture(scope="module")
def url(home: Path, admin_token: str) -> Iterator[str]:
    with serving(home, "--rate-limit", "0") as u:
        yield u


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    d = browser()
    try:
        yield d
    finally:
        d.quit()


def _wait(driver: Any, css: str, timeout: float = 90) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def _submit(driver: Any, css: str, timeout: float = 90) -> None:
    """Click the button ``css`` of a form and wait until the browser has left the page it was on (so that a
    wait for an element both pages have does not find the old page's)."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    page = _el(driver, "html")
    _el(driver, css).click()
    WebDriverWait(driver, timeout).until(ec.staleness_of(page))


def _el(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def _els(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def _sign_in(driver: Any, url: str, token: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{url}/console/")
    assert driver.current_url.endswith("/console/sign-in")
    _el(driver, "#api_key").send_keys(token)
    _el(driver, "#sign-in").click()
    _wait(driver, "#actor")


def _console_errors(driver: Any, allowed: tuple[str, ...] = ()) -> list[str]:
    """The browser's console messages of level SEVERE or WARNING since the last call (CSP violations
    and script errors are SEVERE), less those containing one of ``allowed``."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] in ("SEVERE", "WARNING") and not any(a in e["message"] for a in allowed)]


def test_a_new_user_signs_in_enrols_searches_erases_reads_the_log_and_signs_out(
        driver: Any, url: str, admin_token: str) -> None:
    _sign_in(driver, url, admin_token)
    assert _el(driver, "#actor").text == "alice (admin)"  # the key's name, as the actor
    assert _console_errors(driver) == []

    _el(driver, "#new-name").send_keys("demo")
    _el(driver, "#create-collection").click()
    _wait(driver, "#collection-name")
    assert driver.current_url.endswith("/console/c/demo")
    # this demo shows investigations' candidates to the searcher before review (a policy choice, logged)
    disclose = _el(driver, "input[name=disclose_before_review]")
    assert not disclose.is_selected()  # off by default
    disclose.click()
    _submit(driver, "#save-policy")  # the collection page again: wait for the new one, not the old
    _wait(driver, "#collection-name")
    assert _el(driver, "input[name=disclose_before_review]").is_selected()

    # enrol the bundled portraits (first photo of each person), one person per file; the page's script
    # sends them one at a time and shows each result as it comes
    firsts = sorted(PORTRAITS.glob("*_a.jpg"))
    _el(driver, "#images").send_keys("\n".join(str(p) for p in firsts))
    _el(driver, "#person-from-file").click()
    _el(driver, "#enrol").click()
    _wait(driver, "#enrol-done", timeout=180)
    results = _els(driver, "#enrol-results .result")
    assert len(results) == len(firsts)
    assert all("1 face(s) enrolled for" in r.text for r in results), [r.text for r in results]
    driver.get(f"{url}/console/c/demo")
    assert _el(driver, "#face-count").text == str(len(firsts))
    assert _el(driver, "#person-count").text == str(len(firsts))
    assert "A000368" in _el(driver, "#persons").text

    # investigate: the other photo of A000368 puts A000368 first among the leads
    driver.get(f"{url}/console/search?collection=demo")
    _el(driver, "#image").send_keys(str(PORTRAITS / "A000368_b.jpg"))
    _el(driver, "#mode-investigate").click()
    _el(driver, "#purpose").send_keys("case 2026-11")
    _el(driver, "#search").click()
    _wait(driver, "#candidates")
    first = _els(driver, "#candidates li")[0]
    assert first.find_element("css selector", ".person").text == "A000368"
    assert "must be reviewed by a person" in first.text
    assert len(_els(driver, "#result svg rect.box")) == 1  # the searched face, boxed on the probe

    # identify: the same probe is a match
    driver.get(f"{url}/console/search?collection=demo")
    _el(driver, "#image").send_keys(str(PORTRAITS / "A000368_b.jpg"))
    _el(driver, "#purpose").send_keys("case 2026-12")
    _el(driver, "#search").click()
    _wait(driver, "#result")
    assert "1 match(es)" in _el(driver, "#result h2").text
    assert "Two different people score" in _el(driver, "#candidates").text

    # detect and compare, drawn and in words
    driver.get(f"{url}/console/detect")
    _el(driver, "#image").send_keys(str(PORTRAITS / "B000444_b.jpg"))
    _el(driver, "#detect").click()
    _wait(driver, "#result")
    assert len(_els(driver, "#result svg rect.box")) == 1
    assert "Good enough to enrol" in _el(driver, "#result").text
    driver.get(f"{url}/console/compare")
    _el(driver, "#image_a").send_keys(str(PORTRAITS / "C000380_a.jpg"))
    _el(driver, "#image_b").send_keys(str(PORTRAITS / "C000380_b.jpg"))
    _el(driver, "#purpose").send_keys("case 2026-13")
    _el(driver, "#compare").click()
    _wait(driver, "#decision")
    assert _el(driver, "#decision").text == "Match"
    assert _el(driver, "#words").text.startswith("These two faces match: two different people score this high")

    # erase a person (the page asks first), with the receipt
    driver.get(f"{url}/console/c/demo")
    _el(driver, "#erase-A000368").click()
    alert = driver.switch_to.alert
    assert "cannot be undone" in alert.text
    alert.accept()
    _wait(driver, "#receipt")
    assert _el(driver, "#erased-person").text == "A000368"
    assert _el(driver, "#erased-count").text == "1"
    driver.get(f"{url}/console/c/demo")
    assert _el(driver, "#face-count").text == str(len(firsts) - 1)
    assert "A000368" not in _el(driver, "#persons").text

    # the log: the searches and the compare with their purposes and the acting key; verified intact
    driver.get(f"{url}/console/log")
    log = _el(driver, "table.log").text
    assert "search_faces_by_image" in log and "compare" in log
    assert "case 2026-11" in log and "case 2026-13" in log and "policy_changed" in log
    driver.get(f"{url}/console/log?action=compare")
    rows = _els(driver, "table.log tbody tr")
    assert len(rows) == 1 and "case 2026-13" in rows[0].text
    _el(driver, "#verify").click()
    _wait(driver, "#verification")
    assert _el(driver, "#verification").text.startswith("intact")

    # keys: a new key is shown once
    driver.get(f"{url}/console/keys")
    _el(driver, "#key-name").send_keys("bob (reader)")
    _el(driver, "#key-collection").send_keys("demo")
    _el(driver, "#scope-read").click()
    _el(driver, "#create-key").click()
    _wait(driver, "#new-token")
    token = _el(driver, "#new-token").text
    assert token.startswith("fl_")
    assert "bob (reader)" in _el(driver, "#keys").text
    driver.get(f"{url}/console/keys")
    assert token not in driver.page_source  # shown once only

    assert _console_errors(driver) == []  # no CSP violation, no script error, nothing failed to load

    _el(driver, "#sign-out").click()
    _wait(driver, "#api_key")
    driver.get(f"{url}/console/c/demo")
    assert driver.current_url.endswith("/console/sign-in")  # the session is over


def test_a_forged_csrf_token_is_refused_and_nothing_is_created(driver: Any, url: str, admin_token: str) -> None:
    _sign_in(driver, url, admin_token)
    driver.execute_script("document.querySelector('#create-collection').form"
                          ".querySelector('input[name=csrf_token]').value = 'forged';")
    _el(driver, "#new-name").send_keys("forged")
    _el(driver, "#create-collection").click()
    _wait(driver, "#error")
    assert "CSRF token is missing or wrong" in _el(driver, "#error").text
    names = httpx.get(f"{url}/v1/collections", headers={"Authorization": f"Bearer {admin_token}"}).json()
    assert "forged" not in names["collections"]
    assert _console_errors(driver, allowed=("status of 403",)) == []


def test_a_read_only_key_sees_only_what_its_scope_allows(driver: Any, url: str, home: Path,
                                                          admin_token: str) -> None:
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
    for name in ("readable", "hidden"):
        assert client.post("/v1/collections", json={"name": name}).status_code == 201
    r = client.post("/v1/collections/readable/faces", files={"image": (PORTRAITS / "D000601_a.jpg").read_bytes()},
                    data={"person_id": "D000601"})
    assert r.status_code == 200, r.text
    reader = make_key(home, name="carol (reader)", grants={"readable": ["read"]})
    _sign_in(driver, url, reader)
    assert _el(driver, "#actor").text == "carol (reader)"
    nav = _el(driver, "header nav").text
    assert "Log" not in nav and "Keys" not in nav
    body = _el(driver, "main").text
    assert "readable" in body and "hidden" not in body
    driver.get(f"{url}/console/c/readable")
    assert "D000601" in _el(driver, "#persons").text
    assert _els(driver, "#enrol-form") == [] and _els(driver, "button.danger") == []
    driver.get(f"{url}/console/c/hidden")  # invisible: the API's 404, word for word
    assert "no collection named 'hidden'" in _el(driver, "#error").text
    driver.get(f"{url}/console/log")
    assert "global admin key" in _el(driver, "#error").text
    driver.get(f"{url}/console/search")
    assert "search scope on no collection" in _el(driver, "main").text
    assert _console_errors(driver, allowed=("status of 403", "status of 404")) == []


def test_the_search_form_refuses_what_the_collection_policy_forbids_before_sending(
        driver: Any, url: str, admin_token: str) -> None:
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
    for name in ("strict", "relaxed"):
        assert api.post("/v1/collections", json={"name": name}).status_code == 201
    assert api.patch("/v1/collections/strict/policy", json={"allowed_modes": ["identify"], "purpose_required": True,
                                                           "max_fpir": 0.001}).status_code == 200
    _sign_in(driver, url, admin_token)
    driver.get(f"{url}/console/search?collection=strict")
    assert "identify only; a purpose is required" in _el(driver, "#policy-hint").text
    assert not _el(driver, "#mode-investigate").is_enabled()
    _el(driver, "#image").send_keys(str(PORTRAITS / "C000380_b.jpg"))
    _el(driver, "#search").click()  # no purpose: the browser keeps the form (nothing is sent)
    valid = "return [document.querySelector(arguments[0]).validity.valueMissing, " \
            "document.querySelector(arguments[0]).validity.rangeOverflow]"
    assert driver.execute_script(valid, "#purpose") == [True, False]
    assert _els(driver, "#result") == []
    _el(driver, "#purpose").send_keys("case 2026-14")
    _el(driver, "#max_fpir").send_keys("0.01")  # looser than the policy allows
    _el(driver, "#search").click()
    assert driver.execute_script(valid, "#max_fpir") == [False, True]
    assert _els(driver, "#result") == []
    entries = api.get("/v1/log", params={"limit": 1000}).json()["entries"]
    assert not [e for e in entries if e.get("collection") == "strict" and e["action"].startswith("search")]

    # another collection chosen: its rules replace these (read from its policy), without reloading the page
    from selenium.webdriver.support.ui import Select, WebDriverWait

    Select(_el(driver, "#collection")).select_by_visible_text("relaxed")
    WebDriverWait(driver, 30).until(lambda d: "Policy of relaxed" in _el(d, "#policy-hint").text)
    assert _el(driver, "#mode-investigate").is_enabled()
    # this service requires a purpose of every search (serve's default), whatever a collection's policy says
    assert "a purpose is required (by the service's setting)" in _el(driver, "#policy-hint").text
    assert driver.execute_script("return document.querySelector('#purpose').required") is True
    assert driver.execute_script(valid, "#max_fpir") == [False, False]  # 0.01 is allowed here
    _el(driver, "#mode-investigate").click()
    assert not _el(driver, "#max_fpir").is_enabled()  # an identify-only option is not sent with an investigation
    assert _console_errors(driver) == []


PAGES = ("/console/", "/console/c/kbd", "/console/detect", "/console/compare", "/console/search?collection=kbd",
         "/console/review", "/console/log", "/console/keys", "/console/audit", "/console/audit/transparency")


def test_every_page_works_with_the_keyboard_and_fits_a_laptop_screen(driver: Any, url: str, admin_token: str) -> None:
    from selenium.webdriver.common.keys import Keys

    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
    assert api.post("/v1/collections", json={"name": "kbd"}).status_code == 201
    r = api.post("/v1/collections/kbd/faces", files={"image": (PORTRAITS / "C001082_a.jpg").read_bytes()},
                 data={"person_id": "C001082"})
    assert r.status_code == 200, r.text
    driver.set_window_size(1366, 768)
    try:
        # sign in with the keyboard only: the key field has the focus, Enter sends the form
        driver.delete_all_cookies()
        driver.get(f"{url}/console/sign-in")
        assert driver.switch_to.active_element.get_attribute("id") == "api_key"
        driver.switch_to.active_element.send_keys(admin_token, Keys.ENTER)
        _wait(driver, "#actor")
        unlabelled_js = """return [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden' && !e.labels.length && !e.getAttribute('aria-label'))
            .map(e => e.outerHTML)"""
        for path in PAGES:
            driver.get(f"{url}{path}")
            assert _els(driver, "#error") == [], (path, _el(driver, "main").text[:300])
            # readable at 1366x768: nothing wider than the window (no sideways scrolling)
            assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), path
            assert driver.execute_script(unlabelled_js) == [], path  # every field has a label
            positive = "return [...document.querySelectorAll('[tabindex]')].filter(e => e.tabIndex > 0).length"
            assert driver.execute_script(positive) == 0, path  # the focus follows the page's order
            # the first Tab reaches the skip link; Enter on it moves the focus to the page's content
            driver.execute_script("document.activeElement && document.activeElement.blur()")
            _el(driver, "body").send_keys(Keys.TAB)
            assert driver.switch_to.active_element.get_attribute("class") == "skip", path
            outline = driver.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
            assert outline != "none", path  # the focus is visible
            driver.switch_to.active_element.send_keys(Keys.ENTER)
            assert driver.switch_to.active_element.get_attribute("id") == "main", path
            driver.switch_to.active_element.send_keys(Keys.TAB)
            inside = driver.execute_script("return document.querySelector('main').contains(document.activeElement)")
            assert inside, (path, driver.switch_to.active_element.get_attribute("outerHTML"))
        assert _console_errors(driver) == []
    finally:
        driver.set_window_size(1366, 900)


def test_an_audit_started_in_the_browser_shows_its_progress_and_links_its_report(
        driver: Any, url: str, admin_token: str, tmp_path: Path) -> None:
    import shutil

    from selenium.webdriver.support.ui import WebDriverWait

    dataset = tmp_path / "people"
    for photo in sorted(PORTRAITS.glob("*.jpg")):
        (dataset / photo.stem.split("_")[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, dataset / photo.stem.split("_")[0] / photo.name)
    _sign_in(driver, url, admin_token)
    driver.get(f"{url}/console/audit")
    _el(driver, "#dataset").send_keys("people")  # a relative path: refused, saying what to give
    _submit(driver, "#start-audit")
    assert "absolute path on the server" in _el(driver, "#audit-problem").text
    _el(driver, "#dataset").clear()
    _el(driver, "#dataset").send_keys(str(dataset))
    _el(driver, "#audit-name").send_keys("people-audit")
    _submit(driver, "#start-audit")
    _wait(driver, "#job-people-audit")
    # the page's script follows the job and puts the report's link in place when it is done
    WebDriverWait(driver, 300).until(lambda d: _els(d, "#job-people-audit .job-report")
                                     or _els(d, "#job-people-audit .job-error"))
    assert _els(driver, "#job-people-audit .job-error") == [], _el(driver, "#job-people-audit").text
    _el(driver, "#job-people-audit .job-report").click()
    frame = _wait(driver, "#shown iframe.report")
    driver.switch_to.frame(frame)
    try:
        assert "people" in _el(driver, "body").text
    finally:
        driver.switch_to.default_content()
    assert _console_errors(driver, allowed=("status of 422",)) == []  # the refused form, only
