"""A real browser for the console's tests: headless Chromium driven by Selenium through Debian's
``chromium-driver`` (the driver and the browser come from one Debian source package, so their versions
always match, and Selenium never downloads anything: the driver's path is given)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def _program(env: str, *names: str) -> str | None:
    """``$env`` if it names an executable, else the first of ``names`` on the PATH."""
    given = os.environ.get(env)
    if given:
        return given if os.access(given, os.X_OK) else None
    return next((found for n in names if (found := shutil.which(n))), None)


CHROMIUM = _program("FACELENS_CHROMIUM", "chromium", "chromium-browser")
CHROMEDRIVER = _program("FACELENS_CHROMEDRIVER", "chromedriver")
try:
    import selenium  # noqa: F401

    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

#: Why the browser tests cannot run here, or None.
MISSING = (None if CHROMIUM and CHROMEDRIVER and HAVE_SELENIUM else
           "no headless browser: the console's browser tests need Chromium, its driver and Selenium "
           "(Debian: `apt-get install chromium chromium-driver`; `pip install -c constraints.txt selenium`; "
           ".ci/run installs them)")


def browser(width: int = 1366, height: int = 900) -> Any:
    """A headless Chromium keeping its console messages (``driver.get_log("browser")``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)
    return driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(home: Path, *args: str) -> Iterator[str]:
    """``facelens serve --home HOME ARGS`` in its own process on a free loopback port; yields its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "facelens", "serve", "--home", str(home), "--port", str(port),
                             "--no-access-log", "--workers", "2", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"facelens serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("facelens serve did not start within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
