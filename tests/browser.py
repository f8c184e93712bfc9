"""The tests' real browser: Debian's Chromium driven by selenium through chromedriver.

Selenium Manager is never asked to download anything: the driver and the browser are the
system ones (``.ci/run`` installs ``chromium`` and ``chromium-driver``). Locally the tests
skip when they are missing; in CI (``CI=true``) they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1360,900",
)


def require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        message = (
            f"{' and '.join(missing)} missing (Debian: apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium with a fresh profile and the performance log on."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cronmetrics-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str, tmp_dir: Path) -> Path:
    """Save the whole page as ``name``.png in ``tmp_dir``, and in docs/img/ too when
    ``CRONMETRICS_SCREENSHOTS`` is set (to refresh the pictures docs/dashboard.md shows)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return window.outerWidth")
    driver.set_window_size(width, min(max(height + 120, 600), 4000))
    tmp_dir.mkdir(parents=True, exist_ok=True)
    path = tmp_dir / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("CRONMETRICS_SCREENSHOTS"):
        docs = Path(__file__).resolve().parent.parent / "docs" / "img"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(path, docs / f"{name}.png")
    driver.set_window_size(1360, 900)
    return path
