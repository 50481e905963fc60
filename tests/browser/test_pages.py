"""The web page, driven in headless Chromium against real daemons."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import NODE, Cli, Daemon, snapshot, wait_connected

pytestmark = pytest.mark.integration


def wait(driver: Any, seconds: float = 20) -> WebDriverWait:  # type: ignore[type-arg]
    return WebDriverWait(driver, seconds)


def cells(driver: Any, css: str) -> list[list[str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, f"{css} tbody tr")
    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def test_the_fleet_page_lists_the_guests(
    browser: Any,
    tunnel: Callable[[Path], str],
    start_daemon: Callable[..., Daemon],
    db: str,
    run: Cli,
) -> None:
    """Over the read-write socket: the host, every guest with a policy with its
    state, and a guest's link leads to its page with its policy."""
    run("policy", "set", "web", "--requires", "db", "--vcpus", "0", "--label", "tier=front")
    run("policy", "set", "db", "--weight", "200")
    daemon = start_daemon(db, "--connect", f"test://{NODE}")
    wait_connected(daemon)
    url = tunnel(daemon.socket)
    browser.get(url + "/")
    wait(browser).until(lambda d: len(cells(d, "#guests")) == 2)
    rows = {r[0]: r for r in cells(browser, "#guests")}
    assert rows["web"][2] == "running"
    assert rows["web"][6] == "tier=front"
    assert "db" in rows
    hosts = cells(browser, "#hosts")
    assert hosts[0][1] == "up"
    assert browser.find_element(By.ID, "who").text.endswith("(admin)")  # root, through the tunnel
    # Filters are in the URL: a link shows the same page.
    browser.find_element(By.NAME, "label").send_keys("tier=front")
    browser.find_element(By.CSS_SELECTOR, "#filters button").click()
    wait(browser).until(lambda d: len(cells(d, "#guests")) == 1)
    assert "label=tier%3Dfront" in browser.current_url
    browser.find_element(By.LINK_TEXT, "web").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "policy"), "requires"))
    assert "Revision 1" in browser.find_element(By.ID, "policy").text
    assert browser.find_element(By.ID, "deps").text.count("db") >= 1


def test_the_read_only_socket_offers_no_write(
    browser: Any,
    tunnel: Callable[[Path], str],
    start_daemon: Callable[..., Daemon],
    db: str,
    run: Cli,
) -> None:
    """Over the read-only socket the page says so, the caller is a reader, and a
    write made from the page anyway is refused (the API decides, not the page)."""
    run("policy", "set", "db", "--weight", "200")
    daemon = start_daemon(db, "--connect", f"test://{NODE}")
    wait_connected(daemon)
    url = tunnel(daemon.run_dir / "virtpolicy-ro.sock")
    before = snapshot(db)
    browser.get(url + "/guests/db")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "policy"), "weight"))
    assert browser.find_element(By.ID, "readonly").is_displayed()
    assert "(reader)" in browser.find_element(By.ID, "who").text
    shown = [b for b in browser.find_elements(By.CSS_SELECTOR, "main button") if b.is_displayed()]
    assert shown == []  # no write control (the guest page has no other button yet)
    status = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch('/v1/policies/db', {method: 'PATCH', headers: {'Content-Type': 'application/json'},
              body: JSON.stringify({cpu: {weight: 300}})}).then(r => done(r.status));"""
    )
    assert status == 403
    assert snapshot(db) == before


def test_over_tls_without_a_token_only_the_prompt_shows(
    browser: Any, https: str, db: str, run: Cli
) -> None:
    """The shell holds no data: without a token the API answers 401 and the page
    shows the token prompt and nothing else; a token makes it show the fleet."""
    run("policy", "set", "db", "--weight", "200")
    browser.get(https + "/")
    wait(browser).until(lambda d: d.find_element(By.ID, "token-form").is_displayed())
    assert not browser.find_element(By.ID, "content").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#guests tr") == []
    token = run("token", "create", "ops", "--role", "reader").output.strip()
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(browser).until(lambda d: len(cells(d, "#guests")) == 1)
    assert browser.find_element(By.ID, "who").text == "token:ops (reader)"
