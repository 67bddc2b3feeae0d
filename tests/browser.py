"""A real headless browser for the web view's tests: Debian's chromium, driven by selenium.

``browser`` is a fixture, one browser per test module. Chromium and its driver are
installed with tests/ensure_chromium.sh before the first test when missing (tests/services.py,
as for PostgreSQL). Without them the tests skip, except under CI (``CI=true``) where that is
a failure: a green CI must mean a browser ran the page. Every JavaScript error the page logs
(the console's SEVERE entries) fails the test that caused it: ``Browser.console_errors``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: The probe's flags for this machine: without the background-networking ones chromium
#: keeps dialling hosts a closed network refuses.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WIDTH, HEIGHT = 1280, 800


def _find() -> tuple[str, str] | None:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def chromium_installed() -> bool:
    return _find() is not None


class Browser:
    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def get(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait_for(self, script: str, timeout: float = 30, what: str = "") -> Any:
        """Poll ``return <expr>`` in the page until it is truthy; return its value."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
            lambda d: d.execute_script(script), message=what or script
        )

    def console_errors(self) -> list[str]:
        """The SEVERE console entries since the last call (reading the log empties it)."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    found = _find()
    required = os.environ.get("CI") == "true"
    if found is None:
        message = "chromium and chromedriver are not installed; tests/ensure_chromium.sh does"
        if required:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[test]'")
    chromium, driver_path = found
    profile = tempfile.mkdtemp(prefix="agentsaga-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    # The viewport itself at 1280x800 (a window size would include the browser's frame).
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
