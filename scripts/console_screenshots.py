"""Take a screenshot of every console page into docs/console/ (for the README and docs/console.md).

Starts ``facelens serve`` on a fresh home, does what a new user does (sign in, create a collection, enrol
the bundled portraits, search in both modes, compare, erase, run an audit of the portraits from the Audit
page, read the transparency report), then saves each page as a PNG: the browser is 1366x768 (a laptop's
screen), each page taken whole. Needs Chromium, chromium-driver and Selenium (as the browser tests do)::

    python scripts/console_screenshots.py [--out docs/console]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402

from tests._browser import MISSING, browser, serving  # noqa: E402
from tests._service import make_key  # noqa: E402

PORTRAITS = ROOT / "examples" / "portraits"
WIDTH, HEIGHT = 1366, 768  # a laptop's screen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    args = parser.parse_args()
    if MISSING:
        sys.exit(MISSING)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        token = make_key(home, name="alice (admin)", admin=True)
        dataset = home / "portraits-by-person"  # the portraits as an audit dataset: one folder per person
        for photo in sorted(PORTRAITS.glob("*.jpg")):
            (dataset / photo.stem.split("_")[0]).mkdir(parents=True, exist_ok=True)
            (dataset / photo.stem.split("_")[0] / photo.name).symlink_to(photo)
        with serving(home, "--rate-limit", "0") as url:
            d = browser(WIDTH, HEIGHT)
            try:
                shoot(d, url, token, args.out, dataset)
            finally:
                d.quit()


def shoot(d: object, url: str, token: str, out: Path, dataset: Path) -> None:
    from typing import Any

    drv: Any = d

    def el(css: str) -> Any:
        return drv.find_element(By.CSS_SELECTOR, css)

    def wait(css: str) -> None:
        deadline = time.monotonic() + 120
        while not drv.find_elements(By.CSS_SELECTOR, css):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{css} did not appear on {drv.current_url}")
            time.sleep(0.2)

    def save(name: str) -> None:
        drv.execute_script("window.scrollTo(0, 0)")  # the whole page from its top, whatever the link's anchor
        height = drv.execute_script("return document.documentElement.scrollHeight")
        chrome = drv.execute_script("return window.outerHeight - window.innerHeight")  # the window's own bars
        drv.set_window_size(WIDTH, min(max(HEIGHT, int(height) + int(chrome)), 2600))
        time.sleep(0.5)  # let it repaint at the new size
        drv.save_screenshot(str(out / f"{name}.png"))
        drv.set_window_size(WIDTH, HEIGHT)
        print(f"{out / name}.png")

    drv.get(f"{url}/console/")
    save("sign-in")
    el("#api_key").send_keys(token)
    el("#sign-in").click()
    wait("#actor")
    el("#new-name").send_keys("demo")
    el("#create-collection").click()
    wait("#enrol-form")
    el("#images").send_keys("\n".join(str(p) for p in sorted(PORTRAITS.glob("*_a.jpg"))))
    el("#person-from-file").click()
    el("#enrol").click()
    wait("#enrol-done")
    save("enrol")
    drv.get(f"{url}/console/c/demo")
    save("collection")
    drv.get(f"{url}/console/detect")
    el("#image").send_keys(str(PORTRAITS / "C001079_b.jpg"))
    el("#detect").click()
    wait("#result")
    save("detect")
    drv.get(f"{url}/console/compare")
    el("#image_a").send_keys(str(PORTRAITS / "C000380_a.jpg"))
    el("#image_b").send_keys(str(PORTRAITS / "C000380_b.jpg"))
    el("#purpose").send_keys("case 2026-0173")
    el("#compare").click()
    wait("#decision")
    save("compare")
    for mode in ("identify", "investigate"):
        drv.get(f"{url}/console/search?collection=demo")
        el("#image").send_keys(str(PORTRAITS / "B000444_b.jpg"))
        el(f"#mode-{mode}").click()
        el("#purpose").send_keys("case 2026-0173")
        el("#search").click()
        wait("#result")
        save(f"search-{mode}")
    drv.get(f"{url}/console/c/demo")
    el("#erase-D000601").click()
    drv.switch_to.alert.accept()
    wait("#receipt")
    save("erased")
    drv.get(f"{url}/console/")
    save("dashboard")
    drv.get(f"{url}/console/log")
    el("#verify").click()
    wait("#verification")
    save("log")
    drv.get(f"{url}/console/keys")
    el("#key-name").send_keys("bob (reviewer)")
    el("#key-collection").send_keys("demo")
    el("#scope-search").click()
    el("#create-key").click()
    wait("#new-token")
    save("keys")
    drv.get(f"{url}/console/audit")
    el("#dataset").send_keys(str(dataset))
    el("#audit-name").send_keys("portraits")
    el("#start-audit").click()
    wait("#job-portraits")
    save("audit-running")
    wait("#job-portraits .job-report")
    el("#job-portraits .job-report").click()
    wait("#shown iframe.report")
    time.sleep(1)
    save("audit")
    drv.get(f"{url}/console/audit/transparency")
    wait("#totals")
    time.sleep(1)
    save("transparency")
    drv.get(f"{url}/console/review")
    save("review")


if __name__ == "__main__":
    main()
