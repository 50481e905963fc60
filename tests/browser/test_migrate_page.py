"""Migrating a guest from its page, on the lab's two real libvirtds with a daemon
on each (tests/twohosts.py), in headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import eventually, try_virsh, virsh
from tests.twohosts import Lab, two_hosts_fixture  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration


def answer(driver: Any) -> str:
    text: str = driver.execute_script(
        "return document.getElementById('migrate-answer')?.innerText || ''"
    )
    return text


@pytest.mark.long
def test_a_guest_migrates_from_its_page_only_where_the_destination_takes_it(
    browser: Any,
    tunnel: Callable[[Path], str],
    two_hosts: Callable[[], Lab],
    make_guest: Callable[..., str],
) -> None:
    """ded (a dedicated vCPU) runs on host-a; host-b's only CPU for it is held.
    Migrate… on ded's page asks host-b, which refuses with its reason, and offers
    no Confirm. Once the CPU is free, host-b takes it; nothing moves until
    Confirm, and then the job migrates it."""
    ded = make_guest("pgded", vcpus=1)
    env = two_hosts()
    hold = "vp-test-pghold"
    for guest in (ded, hold):
        doc = {"guest": guest, "cpu": {"placement": "dedicated"}}
        assert env.cli("apply", "-f", "-", input=json.dumps(doc)).exit_code == 0
    env.define_on_b(hold)
    virsh("start", ded)

    def published(daemon: Any, host: str, guest: str) -> bool:
        room = env.placement(daemon, host).get("room") or {}
        return guest in room.get("dedicated", {})

    eventually(lambda: published(env.a, "host-b", hold), 20)
    eventually(lambda: published(env.b, "host-a", ded), 20)
    eventually(lambda: env.status_host(ded) == ["host-a"], 10)

    browser.get(tunnel(env.a.socket) + f"/guests/{ded}")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "button.migrate"))[0].click()
    refused = wait.until(lambda d: answer(d) if "refuses" in answer(d) else None)
    assert refused.startswith(f"host-b refuses it: no room on host-b: {ded}: needs 1 dedicated")
    assert browser.find_elements(By.CSS_SELECTOR, "#action button.confirm") == []

    assert env.on_b("undefine", hold).returncode == 0
    eventually(lambda: not published(env.a, "host-b", hold), 20)
    browser.find_element(By.XPATH, "//div[@id='action']//button[text()='Cancel']").click()
    browser.find_element(By.CSS_SELECTOR, "button.migrate").click()
    wait.until(lambda d: "takes it" in answer(d))
    assert try_virsh("domstate", ded).stdout.strip() == "running"  # nothing moved yet
    browser.find_element(By.CSS_SELECTOR, "#action button.confirm").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "action"), "succeeded"))
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#action tbody tr')]"
        ".map(r => [...r.cells].map(c => c.innerText.trim()))"
    )
    assert [r[:3] for r in rows] == [[ded, "host-a", "migrated"]], rows
    assert env.on_b("domstate", ded).stdout.strip() == "running"
    assert try_virsh("domstate", ded).returncode != 0
