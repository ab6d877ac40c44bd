"""The status pages in a real headless Chromium: log in, open every page, act on the review queue.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``) and the real Redis. Missing Chromium fails the test: CI must prove the pages
work in a browser. Screenshots of each page go to ``docs/screenshots/<page>.png`` when
CONNECTOR_UPDATE_SCREENSHOTS=1 is set.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from connector.context import AppContext
from connector.models import AuditEntry, ReviewItem
from tests.unit.web.seed import PASSWORD, make_context, seed
from web import create_app, ui

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
# The README's screenshots are refreshed only on request (`CONNECTOR_UPDATE_SCREENSHOTS=1 make test`);
# otherwise they go to a scratch folder so a test run never changes tracked files.
SCREENSHOTS = (
    REPO / "docs" / "screenshots"
    if os.environ.get("CONNECTOR_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "connector-screenshots"
)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1360,1000",
)


def _wait(driver: Any, condition: Any, timeout: float = 10.0) -> None:
    """Wait until ``condition(driver)`` holds (page loads after a click are asynchronous)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(condition)


def _require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: the browser tests need Debian's Chromium; "
            "run `apt-get install -y chromium chromium-driver`"
        )


@pytest.fixture
def site(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, AppContext, dict[str, int]]]:
    """The app on a loopback port over a seeded SQLite database and the real Redis."""
    context = make_context(
        f"sqlite:///{tmp_path / 'ui.db'}",
        redis_url=redis_url,
        # Plain http on localhost: the one case where the session cookie may drop Secure.
        extra={"CONNECTOR_PUBLIC_URL": "http://127.0.0.1"},
    )
    ids = seed(context)
    app = create_app({"CONNECTOR_CONTEXT": context, "CONNECTOR_ENQUEUE": lambda *a: None})
    ui.register(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", context, ids
    finally:
        server.shutdown()
        thread.join(timeout=10)
        context.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium through Debian's chromedriver, with a fresh profile."""
    _require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: Any, page: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Grow the viewport to the page so the screenshot shows all of it.
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {
            "width": 1360,
            "height": max(700, min(height, 2400)),
            "deviceScaleFactor": 1,
            "mobile": False,
        },
    )
    try:
        assert driver.save_screenshot(str(SCREENSHOTS / f"{page}.png"))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_status_pages_in_chromium(site: tuple[str, AppContext, dict[str, int]], browser: Any):
    from selenium.webdriver.common.by import By

    base, context, ids = site
    driver = browser

    # Every page sends a stranger to the login form.
    driver.get(f"{base}/history")
    assert "/login" in driver.current_url
    _shot(driver, "login")
    driver.find_element(By.ID, "password").send_keys("wrong")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(driver, lambda d: "Wrong password." in d.page_source)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    # Clicking returns before the browser has followed the redirect: wait for the page.
    _wait(driver, lambda d: d.current_url.endswith("/history"))
    cookie = driver.get_cookie("connector_session")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"

    driver.get(f"{base}/")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Overview"
    stale_row = driver.find_element(By.CSS_SELECTOR, "tr.row-bad")
    assert "zoho-in" in stale_row.text
    assert "needs re-authorization" in stale_row.text
    reconnect = stale_row.find_element(By.LINK_TEXT, "Reconnect").get_attribute("href")
    assert reconnect.endswith("/oauth/zoho/start?organization_id=60012345&name=zoho-in")
    healthy = driver.find_elements(By.CSS_SELECTOR, "tbody tr:not(.row-bad)")
    assert any("Acme GmbH" in row.text and "old" in row.text for row in healthy)
    _shot(driver, "overview")

    driver.get(f"{base}/budget")
    legend = driver.find_element(By.CSS_SELECTOR, ".gauge-legend").text
    assert "12,000" in legend  # six acquisitions of 2,000 tokens in the seed
    assert len(driver.find_elements(By.CSS_SELECTOR, ".chart rect.bar")) == 24
    _shot(driver, "budget")

    driver.get(f"{base}/queues")
    assert "waiting in" in driver.page_source
    assert (
        driver.find_element(By.LINK_TEXT, "Open Flower")
        .get_attribute("href")
        .startswith("http://127.0.0.1:5555")
    )
    _shot(driver, "queues")

    driver.get(f"{base}/history")
    first = driver.find_element(By.CSS_SELECTOR, "table.audit tbody tr details")
    assert not first.find_element(By.CSS_SELECTOR, "table.diff").is_displayed()
    first.find_element(By.TAG_NAME, "summary").click()
    diff = first.find_element(By.CSS_SELECTOR, "table.diff")
    assert diff.is_displayed()
    assert "Acme GmbH" in diff.text
    _shot(driver, "history")
    driver.get(f"{base}/history?outcome=failed")
    rows = driver.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")
    assert len(rows) == 1
    assert "failed" in rows[0].text

    driver.get(f"{base}/history")
    driver.find_element(By.LINK_TEXT, "460000000031001").click()
    _wait(driver, lambda d: "/records/zoho/invoice/460000000031001" in d.current_url)
    assert "INV-000123" in driver.page_source
    driver.find_element(By.LINK_TEXT, "3301").click()
    _wait(driver, lambda d: "/records/pipedrive/deal/3301" in d.current_url)
    driver.get(f"{base}/records/zoho/contact/460000000026049")
    assert "812" in driver.find_element(By.CSS_SELECTOR, "section.card table").text
    _shot(driver, "record")

    driver.get(f"{base}/review")
    item = driver.find_element(By.ID, f"review-{ids['review']}")
    assert "Globex Corp" in item.text
    assert "Globex Ltd" in item.text
    _shot(driver, "review")

    # A POST without the CSRF token is refused, and changes nothing.
    status = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: 'POST', credentials: 'same-origin'})"
        ".then(r => done(r.status)).catch(e => done(String(e)));",
        f"{base}/review/{ids['review']}/ignore",
    )
    assert status == 400
    with context.session() as session:
        assert _review_status(session, ids["review"]) == "open"

    item.find_element(By.XPATH, ".//button[text()='Ignore']").click()
    _wait(driver, lambda d: bool(d.find_elements(By.CSS_SELECTOR, ".flash-ok")))
    assert "ignored" in driver.find_element(By.CSS_SELECTOR, ".flash-ok").text
    assert not driver.find_elements(By.ID, f"review-{ids['review']}")
    assert "Nothing to review." in driver.page_source
    with context.session() as session:
        assert _review_status(session, ids["review"]) == "ignored"
        audit = session.scalars(
            sa.select(AuditEntry).where(
                AuditEntry.action == "ignore", AuditEntry.zoho_id == "460000000026099"
            )
        ).all()
        assert len(audit) == 1

    driver.get(f"{base}/dead-letters")
    row = driver.find_element(By.CSS_SELECTOR, "table.zebra tbody tr")
    assert "sync_record" in row.text
    assert "email is invalid" in row.text
    _shot(driver, "dead-letters")

    driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
    _wait(driver, lambda d: "/login" in d.current_url)
    driver.get(f"{base}/")
    assert "/login" in driver.current_url


def _review_status(session: Any, item_id: int) -> str:
    item = session.get(ReviewItem, item_id)
    assert item is not None
    return str(item.status)
