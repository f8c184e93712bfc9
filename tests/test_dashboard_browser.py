"""The dashboard in a real browser (Debian's Chromium) against a real ``cronmetrics serve``.

One server with tokens and one browser for the module; the tests run in file order, as a
user would: log in, read the list, filter by a label, open a job, pause it, watch a new
result arrive without reloading, and never talk to anything but 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from browser import chromium, require_browser, screenshot
from liveserver import LiveServer, live_server, wait_for

from cronmetrics.web.auth import config_line

pytestmark = pytest.mark.slow

ADMIN = "cm_admin_browser_test_token_0123456789"
VIEWER = "cm_viewer_browser_test_token_0123456789"
HOUR = 3600.0

JOBS = {
    "backup/db_backup.yaml": (
        "job_name: db_backup\nhost: db1\nautomatic_failure_threshold: 7200\nmax_runtime: 1800\n"
        "labels: {team: dba, env: prod}\ndescription: Nightly dump of the main database\n"
    ),
    "reports/nightly_report.yaml": (
        "job_name: nightly_report\nschedule: '30 2 * * *'\ntimezone: Europe/Berlin\n"
        "grace: 900\nlabels: {team: data, env: prod}\ndescription: Sales report for the morning\n"
    ),
    "infra/cert_renew.yaml": (
        "job_name: cert_renew\nhost: edge1\nautomatic_failure_threshold: 7200\n"
        "labels: {team: infra, env: prod}\ndescription: Renew TLS certificates\n"
    ),
    "infra/home_sync.yaml": (
        "job_name: home_sync\nautomatic_failure_threshold: 3600\n"
        "labels: {team: infra, env: stage}\ndescription: rsync of /home\n"
    ),
    "web/cache_warm.yaml": (
        "job_name: cache_warm\nhost: web1\nautomatic_failure_threshold: 86400\n"
        "labels: {team: web, env: prod}\ndescription: Warm the CDN cache\n"
    ),
    "web/sitemap.yaml": (
        "job_name: sitemap\nhost: web1\nschedule: '0 * * * *'\ngrace: 600\n"
        "labels: {team: web, env: prod}\nstatus: maintenance\n"
        "description: Sitemap rebuild (moving to the new CMS)\n"
    ),
}


def _history(now: float) -> list[dict[str, Any]]:
    """Two days of hourly backups (three failed) and a few other runs."""
    results: list[dict[str, Any]] = []
    for i in range(40, 0, -1):
        failed = i in (30, 17, 9)
        results.append(
            {
                "job_name": "db_backup",
                "host": "db1",
                "status": "failure" if failed else "success",
                "duration": 240 + (i * 37) % 180 + (400 if failed else 0),
                "exit_code": 1 if failed else 0,
                "timestamp": _iso(now - i * HOUR),
                "output": "pg_dump: error: connection to server lost\n" if failed else "dump ok\n",
            }
        )
    for day in range(6, 0, -1):
        results.append(
            {
                "job_name": "nightly_report",
                "status": "failure" if day == 1 else "success",
                "duration": 95 + day * 7,
                "exit_code": 3 if day == 1 else 0,
                "timestamp": _iso(now - day * 24 * HOUR + 60),
                "output": (
                    "loading sales ... done\nquery failed: relation sales_2026 does not exist\n"
                    "password=hunter2\n"
                    if day == 1
                    else "report sent\n"
                ),
            }
        )
    results.append(
        {
            "job_name": "cert_renew",
            "host": "edge1",
            "status": "failure",
            "duration": 12,
            "exit_code": 1,
            "timestamp": _iso(now - 3 * HOUR),
            "output": "certbot: rate limit exceeded for edge1.example.org\n",
        }
    )
    return results


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    require_browser()
    root = tmp_path_factory.mktemp("dashboard")
    jobs = root / "jobs.d"
    for name, text in JOBS.items():
        (jobs / name).parent.mkdir(parents=True, exist_ok=True)
        (jobs / name).write_text(text)
    config = root / "config.yaml"
    config.write_text(
        "auth:\n  tokens:\n"
        f"    {config_line('ops', ADMIN, ['admin', 'read', 'submit'])}\n"
        f"    {config_line('viewer', VIEWER, ['read'])}\n"
        "dashboard:\n  session_secret: 'browser-test-secret-0123456789abcdef'\n"
    )
    with live_server(jobs, root / "state", args=("--config", str(config))) as live:
        response = httpx.post(
            f"{live.url}/api/job-result",
            json=_history(time.time()),
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert response.status_code in (200, 202), response.text
        yield live


@pytest.fixture(scope="module")
def browser(site: LiveServer) -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def _rows(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [
        str(row.get_attribute("data-id"))
        for row in driver.find_elements(By.CSS_SELECTOR, "#rows tr[data-id]")
    ]


def _shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "screenshots"


def test_the_list_asks_for_a_token_and_logs_in_with_it(
    site: LiveServer, browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/?label=env%3Dprod")
    assert urlsplit(browser.current_url).path == "/login"
    field = browser.find_element(By.ID, "token")
    assert field.get_attribute("type") == "password"
    field.send_keys("cm_wrong")
    field.submit()
    wait_for(lambda: "unknown token" in browser.page_source, "the login error")
    browser.find_element(By.ID, "token").send_keys(ADMIN)
    browser.find_element(By.CSS_SELECTOR, ".login button[type=submit]").click()
    wait_for(lambda: urlsplit(browser.current_url).path == "/", "the jobs list after login")
    assert "label=env%3Dprod" in browser.current_url  # back where the user wanted to go
    assert ADMIN not in browser.current_url
    cookie = browser.get_cookie("cronmetrics_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert ADMIN not in json.dumps(browser.get_cookies())
    assert ADMIN not in site.log() and VIEWER not in site.log()


def test_the_list_shows_failing_jobs_first_with_words_not_only_colour(
    site: LiveServer, browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    browser.get(site.url + "/")
    rows = _rows(browser)
    assert set(rows) == {
        "db_backup@db1",
        "nightly_report",
        "cert_renew@edge1",
        "home_sync",
        "cache_warm@web1",
        "sitemap@web1",
    }
    screenshot(browser, "dashboard-jobs", _shots(tmp_path_factory))
    # the failed ones (by id), then the rest; maintenance near the end
    assert rows[:2] == ["cert_renew@edge1", "nightly_report"]
    assert rows[-1] == "sitemap@web1"
    second = _text(browser, "#rows tr:nth-child(2)")
    assert "failed" in second.split() and "30 2 * * * Europe/Berlin + 15 min" in second
    assert "failing 2" in _text(browser, "#counts")
    assert "ok" in _text(browser, '#rows tr[data-id="db_backup@db1"]').split()


def test_a_label_chip_filters_the_list_and_the_url_keeps_it(site: LiveServer, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/")
    chip = browser.find_element(By.CSS_SELECTOR, '#rows a.chip[href*="team%3Dinfra"]')
    chip.click()
    wait_for(lambda: "label=team%3Dinfra" in browser.current_url, "the label filter in the URL")
    assert sorted(_rows(browser)) == ["cert_renew@edge1", "home_sync"]
    browser.refresh()  # a shared link shows the same list
    assert sorted(_rows(browser)) == ["cert_renew@edge1", "home_sync"]


def test_a_job_page_says_why_and_shows_its_history(
    site: LiveServer, browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/")
    browser.find_element(By.CSS_SELECTOR, '#rows tr[data-id="nightly_report"] .name a').click()
    wait_for(lambda: urlsplit(browser.current_url).path == "/jobs/nightly_report", "the job page")
    assert _text(browser, "#sentence").startswith("Failed at ")
    assert "exit code 3" in _text(browser, "#sentence")
    assert "reports/nightly_report.yaml" in browser.page_source
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart .bar.fail")
    details = browser.find_element(By.CSS_SELECTOR, "#history details")
    details.find_element(By.TAG_NAME, "summary").click()
    output = details.find_element(By.TAG_NAME, "pre").text
    assert "relation sales_2026 does not exist" in output
    assert "hunter2" not in output and "[REDACTED]" in output
    browser.get(site.url + "/jobs/db_backup@db1")
    screenshot(browser, "dashboard-job", _shots(tmp_path_factory))


def test_an_admin_pauses_a_job_and_the_file_says_so(site: LiveServer, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/jobs/home_sync")
    browser.find_element(By.CSS_SELECTOR, 'button[value="pause"]').click()
    wait_for(lambda: "home_sync is paused" in browser.page_source, "the pause confirmation")
    assert "paused" in _text(browser, ".job-head .badge")
    text = (site.jobs_dir / "infra" / "home_sync.yaml").read_text()
    assert "status: paused" in text
    browser.find_element(By.CSS_SELECTOR, 'button[value="resume"]').click()
    wait_for(lambda: "home_sync is active again" in browser.page_source, "the resume")
    assert "status: paused" not in (site.jobs_dir / "infra" / "home_sync.yaml").read_text()


def test_a_new_result_appears_in_the_open_list_without_a_reload(
    site: LiveServer, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/?label=team%3Dweb")
    row = '#rows tr[data-id="cache_warm@web1"]'
    assert "pending" in _text(browser, row)
    browser.execute_script("window.__still_the_same_page = true;")
    browser.find_element(By.ID, "f-q").click()  # the user acts: refresh faster for a while
    response = httpx.post(
        f"{site.url}/api/job-result",
        json={"job_name": "cache_warm", "host": "web1", "status": "success", "duration": 42},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code in (200, 202)
    wait_for(lambda: "ok" in _text(browser, row).split(), "the new result in the list", timeout=30)
    assert "42 s" in _text(browser, row)
    assert browser.execute_script("return window.__still_the_same_page === true;")


def test_a_read_only_viewer_sees_no_actions(site: LiveServer) -> None:
    from selenium.webdriver.common.by import By

    with chromium() as other:
        other.get(site.url + "/login")
        other.find_element(By.ID, "token").send_keys(VIEWER)
        other.find_element(By.CSS_SELECTOR, ".login button[type=submit]").click()
        wait_for(lambda: urlsplit(other.current_url).path == "/", "the list after login")
        other.get(site.url + "/jobs/db_backup@db1")
        assert "read only" in _text(other, ".who")
        assert not other.find_elements(By.CSS_SELECTOR, 'button[value="pause"]')
        other.find_element(By.CSS_SELECTOR, ".who button").click()  # log out
        wait_for(lambda: urlsplit(other.current_url).path == "/login", "the login page")
        other.get(site.url + "/")
        assert urlsplit(other.current_url).path == "/login"


def test_no_request_leaves_loopback(site: LiveServer, browser: Any) -> None:
    """Everything the pages loaded, as the browser's own network log saw it."""
    browser.get(site.url + "/jobs/db_backup@db1")
    browser.get(site.url + "/")
    entries = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert any(name.endswith(".css?v=" + name.rpartition("=")[2]) for name in entries)
    urls = list(entries)
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert len(urls) > 5
    hosts = {urlsplit(u).hostname for u in urls if urlsplit(u).scheme in ("http", "https", "ws")}
    assert hosts == {"127.0.0.1"}, sorted(u for u in urls if "127.0.0.1" not in u)


def test_phone_width_and_dark_mode(
    site: LiveServer, browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    try:
        browser.set_window_size(390, 844)
        browser.get(site.url + "/")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= browser.execute_script("return window.innerWidth") + 1  # no sideways scroll
        background = browser.execute_script(
            "return getComputedStyle(document.body).backgroundColor"
        )
        assert background == "rgb(13, 17, 23)"
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        focused = browser.switch_to.active_element
        assert focused.text == "Skip to content"  # the keyboard's first stop
        shots = _shots(tmp_path_factory)
        shots.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(shots / "dashboard-phone-dark.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        browser.set_window_size(1360, 900)
