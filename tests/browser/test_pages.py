"""The web page, driven in headless Chromium against real daemons."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.conftest import Served, shot
from tests.conftest import Cli, snapshot, virsh

pytestmark = pytest.mark.integration


def wait(driver: Any, seconds: float = 20) -> WebDriverWait:  # type: ignore[type-arg]
    return WebDriverWait(driver, seconds)


def cells(driver: Any, css: str) -> list[list[str]]:
    """A table's cells, read in one go (the page re-renders as events come)."""
    rows: list[list[str]] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]"
        ".map(r => [...r.cells].map(c => c.innerText.trim()))",
        css,
    )
    return rows


def texts(driver: Any, css: str) -> list[str]:
    """The text of every element ``css`` selects, read in one go."""
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent.trim())",
        css,
    )
    return found


def test_the_fleet_page_lists_the_guests(
    browser: Any,
    served: Served,
    db: str,
    run: Cli,
) -> None:
    """Over the read-write socket: the host, every guest with a policy with its
    state, and a guest's link leads to its page with its policy."""
    run("policy", "set", "web", "--requires", "db", "--vcpus", "0", "--label", "tier=front")
    run("policy", "set", "db", "--weight", "200")
    _daemon, url = served()
    browser.get(url + "/")
    # Every guest of the host; api, without a policy, too.
    wait(browser).until(lambda d: len(cells(d, "#guests")) == 3)
    rows = {r[0]: r for r in cells(browser, "#guests")}
    assert rows["web"][1] == "running Stop…"  # its state, and the action it offers
    assert rows["web"][5] == "tier=front"
    assert "db" in rows
    assert rows["api"][4] == "—"  # no policy: no revision
    hosts = cells(browser, "#hosts")
    assert hosts[0][1] == "up"
    shot(browser, "fleet")
    assert browser.find_element(By.ID, "who").text.endswith("(admin)")  # root, through the tunnel
    # Filters are in the URL: a link shows the same page.
    browser.find_element(By.NAME, "label").send_keys("tier=front")
    browser.find_element(By.CSS_SELECTOR, "#filters button").click()
    wait(browser).until(lambda d: len(cells(d, "#guests")) == 1)
    assert "label=tier%3Dfront" in browser.current_url
    browser.find_element(By.LINK_TEXT, "web").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "policy"), "requires"))
    assert "Revision 1" in browser.find_element(By.ID, "policy").text
    deps = wait(browser).until(lambda d: cells(d, "#deps"))
    assert deps[0][:3] == ["requires", "db", "running"]
    assert deps[0][3].startswith("running on ")


def test_the_read_only_socket_offers_no_write(
    browser: Any,
    served: Served,
    db: str,
    run: Cli,
) -> None:
    """Over the read-only socket the page says so, the caller is a reader, and a
    write made from the page anyway is refused (the API decides, not the page)."""
    run("policy", "set", "db", "--weight", "200")
    _daemon, url = served(socket="virtpolicy-ro.sock")
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
    wait(browser).until(lambda d: len(cells(d, "#guests")) == 3)  # the host's guests
    assert browser.find_element(By.ID, "who").text == "token:ops (reader)"


def test_the_graph_shows_what_blocks_a_guest_and_starts_it(
    browser: Any,
    served: Served,
    db: str,
    run: Cli,
) -> None:
    """web requires api, api requires db; all stopped: the graph draws three
    guests left to right (db, api, web) and says web is held back by api, api
    by db, db being shut off; Start db (an operator's button) starts it, and
    the chain shortens as the page follows the events."""
    run("policy", "set", "web", "--requires", "api")
    run("policy", "set", "api", "--requires", "db")
    daemon, url = served()
    server = ("--server", str(daemon.socket))
    assert run(*server, "stop", "db").exit_code == 0  # web and api first, then db
    browser.get(url + "/graph")
    # db is down but requires nothing: nothing holds it back but itself.
    wait(browser).until(lambda d: len(texts(d, "#blocked li")) == 2)
    chains = texts(browser, "#blocked li")
    assert any(c.startswith("web ← api ← db: db is shut off on ") for c in chains), chains
    columns = dict(
        browser.execute_script(
            "return [...document.querySelectorAll('svg.graph a')].map(a =>"
            " [a.querySelector('text').textContent, Number(a.querySelector('rect')"
            ".getAttribute('x'))])"
        )
    )
    assert columns["db"] < columns["api"] < columns["web"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.graph rect.critical")) == 3
    # The node says so too: its first reason's kind under its name.
    assert "held back" in texts(browser, "svg.graph text.why")
    shot(browser, "graph")
    # The fleet row says why web is down, in view without scrolling (1280x800).
    browser.get(url + "/")
    wait(browser).until(lambda d: len(cells(d, "#guests")) >= 3)
    rows = {r[0]: r for r in cells(browser, "#guests")}
    assert rows["web"][2].startswith("held back: web ← api ← db: db is shut off on "), rows
    assert rows["db"][2] == "—"  # down, but nothing holds it back
    box = browser.execute_script(
        "const c = [...document.querySelectorAll('#guests tbody tr')]"
        ".find(r => r.cells[0].innerText.trim() === 'web').cells[2].getBoundingClientRect();"
        " return [c.left, c.right, c.top, c.bottom, innerWidth, innerHeight]"
    )
    left, right, top, bottom, width, height = box
    assert left >= 0, box
    assert right <= width, box
    assert top >= 0, box
    assert bottom <= height, box
    # And at the top of its page, before anything else.
    browser.get(url + "/guests/web")
    why = wait(browser).until(lambda d: texts(d, "#why li"))
    assert why[0].startswith("warning: held back: web ← api ← db"), why
    top = browser.execute_script(
        "return document.getElementById('why').getBoundingClientRect().top"
    )
    assert top < 200, top
    # Around db, an operator may start it from here; the page follows the job.
    browser.get(url + "/graph?guest=db")
    button = wait(browser).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "button.action[data-action='start']"))
    )
    button.click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "job"), "nothing else starts"))
    browser.find_element(By.CSS_SELECTOR, "#job button.confirm").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "job"), "succeeded"))
    wait(browser).until(
        lambda d: texts(d, "#blocked li") and not any("db is" in t for t in texts(d, "#blocked li"))
    )
    chains = texts(browser, "#blocked li")
    assert any(c.startswith("web ← api: api is shut off on ") for c in chains), chains


def test_no_edge_of_the_graph_crosses_a_node(
    browser: Any,
    served: Served,
    db: str,
    run: Cli,
) -> None:
    """Edges that skip columns (web requires db, three columns away; web wants
    cache, two away) are routed around the guests between: read from the SVG's
    geometry, no point of any edge lies inside any node's box. requires and
    wants are drawn apart, the legend says what each line means, and a group
    that depends on none of the others (batch, queue) is drawn apart, below."""
    run("policy", "set", "web", "--requires", "api", "--requires", "db", "--wants", "cache")
    run("policy", "set", "api", "--requires", "auth")
    run("policy", "set", "auth", "--requires", "db")
    run("policy", "set", "cache", "--requires", "db")
    run("policy", "set", "batch", "--requires", "queue")  # a group of its own
    _daemon, url = served()
    browser.get(url + "/graph")
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.graph path.edge")) == 7)
    inside: list[object] = browser.execute_script(
        """
        const boxes = [...document.querySelectorAll('svg.graph rect.node')].map(r => [
          r.dataset.guest, +r.getAttribute('x'), +r.getAttribute('y'),
          +r.getAttribute('width'), +r.getAttribute('height')]);
        const found = [];
        for (const path of document.querySelectorAll('svg.graph path.edge')) {
          const length = path.getTotalLength();
          for (let at = 0; at <= length; at += 2) {
            const p = path.getPointAtLength(at);
            for (const [guest, x, y, w, h] of boxes) {
              if (p.x > x + 1 && p.x < x + w - 1 && p.y > y + 1 && p.y < y + h - 1) {
                found.push([path.dataset.from, path.dataset.to, guest, p.x, p.y]);
              }
            }
          }
        }
        return found;
        """
    )
    assert inside == []
    columns = dict(
        browser.execute_script(
            "return [...document.querySelectorAll('svg.graph rect.node')]"
            ".map(r => [r.dataset.guest, +r.getAttribute('x')])"
        )
    )
    assert columns["db"] < columns["auth"] < columns["api"] < columns["web"]  # columns skipped
    tops = dict(
        browser.execute_script(
            "return [...document.querySelectorAll('svg.graph rect.node')]"
            ".map(r => [r.dataset.guest, +r.getAttribute('y')])"
        )
    )
    main = ("db", "auth", "api", "web", "cache")
    assert min(tops["batch"], tops["queue"]) > max(tops[g] for g in main)  # apart, below
    kinds = browser.execute_script(
        "return [...document.querySelectorAll('svg.graph path.edge')]"
        ".map(p => [p.dataset.from, p.dataset.to, p.classList.contains('wants')])"
    )
    assert ["web", "cache", True] in kinds
    assert ["web", "db", False] in kinds
    legend = " ".join(texts(browser, ".legend li"))
    assert "requires" in legend
    assert "wants" in legend
    assert "critical path" in legend
    shot(browser, "graph-routed")


def test_stop_previews_its_plan_and_does_nothing_until_confirmed(
    browser: Any,
    served: Served,
    db: str,
    run: Cli,
) -> None:
    """A running guest offers Stop, not Start; Stop on db first says what else
    stops and in what order, and runs nothing: no job, every guest still up.
    Cancelled, nothing is left; confirmed, the job stops web, api, then db."""
    run("policy", "set", "web", "--requires", "api")
    run("policy", "set", "api", "--requires", "db")
    run("policy", "set", "db", "--weight", "200")
    daemon, url = served()
    server = ("--server", str(daemon.socket))
    browser.get(url + "/guests/db")
    offered = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "button.action"))
    assert [b.get_attribute("data-action") for b in offered] == ["stop"]
    offered[0].click()
    said = wait(browser).until(lambda d: texts(d, "#action .preview-text"))
    assert said == ["Stop db also stops web, api, in this order: web → api → db."], said
    time.sleep(1)  # what a click alone would have started by now, had it started
    assert json.loads(run(*server, "jobs", "-o", "json").stdout) == []
    states = {
        r["guest"]: r["state"] for r in json.loads(run(*server, "status", "-o", "json").stdout)
    }
    assert states == {"web": "running", "api": "running", "db": "running"}
    browser.find_element(By.XPATH, "//div[@id='action']//button[text()='Cancel']").click()
    assert texts(browser, "#action *") == []
    browser.find_element(By.CSS_SELECTOR, "button.action").click()
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#action button.confirm"))[
        0
    ].click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "action"), "succeeded"))
    results = {r[0]: r[2] for r in cells(browser, "#action")}
    assert results == {"web": "stopped", "api": "stopped", "db": "stopped"}, results
    # Now down: it offers Start.
    wait(browser).until(
        lambda d: (
            [
                b.get_attribute("data-action")
                for b in d.find_elements(By.CSS_SELECTOR, "button.action")
            ]
            == ["start"]
        )
    )


def test_editing_a_guest_with_a_stale_revision_or_a_bad_field(
    browser: Any,
    served: Served,
    db: str,
    run: Cli,
) -> None:
    """An edit made while someone else changed the policy is refused with who did
    what, and saves nothing; a bad value is shown next to its field and saves
    nothing; a good one saves (revision 3)."""
    run("policy", "set", "db", "--weight", "200")
    _daemon, url = served()
    browser.get(url + "/guests/db")
    weight = wait(browser).until(ec.element_to_be_clickable((By.ID, "f-cpu-weight")))
    weight.clear()
    weight.send_keys("300")
    run("policy", "set", "db", "--weight", "250")  # someone else, meanwhile
    before = snapshot(db)
    browser.find_element(By.XPATH, "//form[@id='editor']//button[text()='Save']").click()
    conflict = wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#conflict .error-text"))
    )
    assert "since you opened it (revision 1 → 2)" in conflict.text
    assert "changed by root at " in conflict.text
    assert texts(browser, "#conflict .diff li") == ["2: cpu.weight: 200 -> 250"]
    assert snapshot(db) == before
    # Start again from the current policy; a weight of 0 is refused at the field.
    browser.find_element(By.XPATH, "//button[text()='Discard']").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "editor"), "revision 2"))
    weight = browser.find_element(By.ID, "f-cpu-weight")
    weight.clear()
    weight.send_keys("0")
    refused_at(browser, db, weight, "Save", "weight")
    weight.clear()
    weight.send_keys("300")
    browser.find_element(By.XPATH, "//form[@id='editor']//button[text()='Save']").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "policy"), "Revision 3"))
    assert "weight: 300" in browser.find_element(By.CSS_SELECTOR, "#policy pre").text


def refused_at(browser: Any, db: str, box: Any, button: str, word: str) -> None:
    """The editor's ``button`` with a bad value in ``box``: the error is shown at
    that field, which is marked invalid, and nothing is stored."""
    before = snapshot(db)
    browser.find_element(By.XPATH, f"//form[@id='editor']//button[text()='{button}']").click()
    error = f"{box.get_attribute('id')}-error"
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, error), word))
    assert box.get_attribute("aria-invalid") == "true"
    assert snapshot(db) == before


def test_a_policy_is_created_from_the_page_with_every_kind_of_field(
    browser: Any,
    served: Served,
    db: str,
    run: Cli,
) -> None:
    """api has no policy: its page says so and offers to create one. Dedicated
    placement hides the pinning fields the API would refuse and shows the
    dedicated ones; memory, requires and wants are fields too. A bad size is
    refused at its field with nothing stored; a good document is revision 1."""
    _daemon, url = served()
    browser.get(url + "/guests/api")
    wait(browser).until(ec.element_to_be_clickable((By.ID, "create-policy"))).click()
    form = wait(browser).until(ec.visibility_of_element_located((By.ID, "editor")))
    assert form.find_element(By.TAG_NAME, "h3").text == "New policy"
    assert browser.find_element(By.ID, "f-cpu-vcpus").is_displayed()
    assert not browser.find_element(By.ID, "f-cpu-threads").is_displayed()
    Select(browser.find_element(By.ID, "f-cpu-placement")).select_by_value("dedicated")
    assert not browser.find_element(By.ID, "f-cpu-vcpus").is_displayed()
    assert browser.find_element(By.ID, "f-cpu-threads").is_displayed()
    Select(browser.find_element(By.ID, "f-cpu-threads")).select_by_value("isolate")
    Select(browser.find_element(By.ID, "f-memory-balloon")).select_by_value("auto")
    floor = browser.find_element(By.ID, "f-memory-floor")
    floor.send_keys("12 parsecs")
    browser.find_element(By.ID, "f-requires").send_keys("db")
    browser.find_element(By.ID, "f-wants").send_keys("web")
    refused_at(browser, db, floor, "Create", "floor")
    floor.clear()
    floor.send_keys("64M")
    browser.find_element(By.XPATH, "//form[@id='editor']//button[text()='Create']").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "policy"), "Revision 1"))
    stored = json.loads(run("policy", "get", "api", "-o", "json").stdout)
    policy = stored.get("policy", stored)
    assert policy["cpu"]["placement"] == "dedicated"
    assert policy["cpu"]["threads"] == "isolate"
    assert policy["memory"]["balloon"] == "auto"
    assert policy["memory"]["floor"] == "64M"
    assert [d["guest"] for d in policy["requires"]] == ["db"]
    assert [d["guest"] for d in policy["wants"]] == ["web"]


NUMA2 = Path(__file__).parents[1] / "integration" / "nodes" / "numa2smt.xml"
OTHER = Path(__file__).parents[1] / "integration" / "nodes" / "other-host.xml"


@pytest.mark.long
def test_the_cpu_map_shows_a_dedicated_guest_on_its_cores(
    browser: Any,
    served: Served,
    db: str,
    run: Cli,
) -> None:
    """2 nodes x 2 cores x 2 threads, CPU 0 reserved: db (dedicated, a whole core
    per vCPU, one node) sits on node 1's two cores, their siblings kept idle; the
    map draws nodes, then cores, then threads, and marks each CPU's use."""
    doc = '{"guest": "db", "cpu": {"placement": "dedicated", "threads": "isolate"}, "numa": {"nodes": 1}}'
    assert run("apply", "-f", "-", input=doc).exit_code == 0
    daemon, url = served("--reserved", "0", uri=f"test://{NUMA2}")
    browser.get(url + "/cpus")
    wait(browser).until(lambda d: "db vCPU 1" in " ".join(texts(d, ".cpu .use")))
    layout = browser.execute_script(
        "return [...document.querySelectorAll('.node')].map(n => [n.querySelector('h2')"
        ".textContent.split(' · ')[0], [...n.querySelectorAll('.core')].map(c => [...c.querySelectorAll('.cpu')]"
        ".map(t => [Number(t.dataset.cpu), t.querySelector('.use').textContent, t.className]))])"
    )
    nodes = dict(layout)
    assert [[cpu for cpu, _use, _cls in core] for core in nodes["Node 1"]] == [[2, 6], [3, 7]]
    uses = {cpu: (use, cls) for cores in nodes.values() for core in cores for cpu, use, cls in core}
    assert uses[2][0] == "db vCPU 0"
    assert uses[3][0] == "db vCPU 1"
    # Beside the plan, what libvirt has pinned there now; and a legend.
    now = dict(
        browser.execute_script(
            "return [...document.querySelectorAll('.cpu')].map(t =>"
            " [Number(t.dataset.cpu), t.querySelector('.now').textContent])"
        )
    )
    assert (now[2], now[3], now[6]) == ("now: db vCPU 0", "now: db vCPU 1", "")
    assert any("dedicated" in t for t in texts(browser, ".legend li"))
    assert texts(browser, ".cpu[data-cpu='2'] .use a") == ["db"]  # names are links
    assert texts(browser, ".cpu[data-cpu='6'] .use a") == ["db"]  # (kept idle)
    assert uses[6][0] == uses[7][0] == "db (kept idle)"
    assert all("dedicated" in uses[c][1] for c in (2, 3, 6, 7))
    assert uses[0][0] == "reserved"
    assert "reserved" in uses[0][1]
    assert all("shared" in uses[c][1] for c in (1, 4, 5))
    # The test driver says nothing of its nodes' memory: the map claims none.
    assert texts(browser, ".node h2") == ["Node 0", "Node 1"]
    # Another host of the fleet (on the same store): picked, its own map, as
    # its daemon published it.
    run("policy", "set", "batch", "--weight", "100")  # its guest, with a policy
    # (A beat every second: its first comes after one, not five.)
    served("--host", "other-host", "--heartbeat", "1", uri=f"test://{OTHER}")

    def pick(d: Any) -> bool:
        for option in d.find_elements(By.CSS_SELECTOR, "#cpu-host option"):
            if option.text == "other-host":
                option.click()
                return True
        return False

    # The map is drawn again as events come: an option read may be gone by its click.
    WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException]).until(pick)
    # its map is there once its daemon's first heartbeat is
    wait(browser, 30).until(lambda d: texts(d, ".host-name strong") == ["other-host"])
    assert "as its daemon last published it" in texts(browser, ".host-name")[0]
    assert len(browser.find_elements(By.CSS_SELECTOR, ".cpu")) == 4  # other-host.xml's four
    browser.get(url + "/cpus")
    wait(browser).until(lambda d: "db vCPU 1" in " ".join(texts(d, ".cpu .use")))
    # Room as the placer counts it: it always leaves one CPU of the host shared.
    assert texts(browser, ".node .room") == [
        "For a new dedicated guest: 2 CPUs, 1 whole core.",
        "For a new dedicated guest: 0 CPUs, 0 whole cores.",
    ]
    hosts = json.loads(run("--server", str(daemon.socket), "hosts", "-o", "json").stdout)
    [name] = [h["name"] for h in hosts if h["name"] != "other-host"]
    assert texts(browser, ".host-name strong") == [name]  # whose map this is
    # web, running, then asking for two whole cores in one node: refused, so it
    # runs with nothing pinned for it, which the map flags (with a link).
    web = '{"guest": "web", "cpu": {"placement": "dedicated", "threads": "isolate"}, "numa": {"nodes": 1}}'
    assert run("apply", "-f", "-", input=web).exit_code == 0
    flagged = wait(browser).until(lambda d: texts(d, "#unpinned a"))
    assert flagged == ["web"]
    assert texts(browser, "#unpinned")[0].startswith("Running unpinned")
    shot(browser, "cpus")
    # The graph's node says so too.
    browser.get(url + "/graph?guest=web")
    kinds = wait(browser).until(lambda d: texts(d, "svg.graph text.why"))
    assert kinds == ["placement refused"], kinds
    # Stopped, Start says it would be refused, and why, and offers nothing to confirm.
    server = ("--server", str(daemon.socket))
    assert run(*server, "stop", "web").exit_code == 0
    browser.get(url + "/guests/web")
    wait(browser).until(lambda d: any("placement refused" in t for t in texts(d, "#why li")))
    browser.find_element(By.CSS_SELECTOR, "button.action[data-action='start']").click()
    refused = wait(browser).until(lambda d: texts(d, "#action .refused"))
    assert refused[0].startswith("It would be refused: placement refused: web: needs 2 "), refused
    assert browser.find_elements(By.CSS_SELECTOR, "#action button.confirm") == []


def test_a_pin_changed_by_hand_is_shown_put_back_without_a_reload(
    browser: Any,
    served: Served,
    make_guest: Callable[..., str],
    qemu_uri: str,
    db: str,
    run: Cli,
) -> None:
    """On the real libvirtd: `virsh vcpupin` moves a running guest's vCPU off its
    policy; the open guest page shows the drift the daemon found and put back,
    and the pin as it is again, as the events come (no reload); its memory; and
    the fleet page the host's memory in use."""
    guest = make_guest("webdrift", vcpus=1)
    run("policy", "set", guest, "--vcpupin", "0:0")
    virsh("start", guest)
    _daemon, url = served("--sample-interval", "1", "--heartbeat", "1", uri=qemu_uri)
    browser.get(url + f"/guests/{guest}")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "drift"), "No drift."))
    browser.execute_script("window.notReloaded = true")
    virsh("vcpupin", guest, "0", "1")
    wait(browser).until(
        lambda d: any("vcpupin.0: found 1, put back to 0" in t for t in texts(d, "#repairs li"))
    )
    wait(browser).until(lambda d: ["vCPU 0", "0", "0"] in cells(d, "#status"))
    assert browser.find_element(By.ID, "drift").text == "No drift."
    assert browser.execute_script("return window.notReloaded") is True
    assert "0" in virsh("vcpupin", guest).split()[-1]
    # Its vCPU's chart fills from the event stream, one point per sample.
    wait(browser).until(
        lambda d: (
            len(texts(d, "#charts figure:not(#memory-chart) figcaption")) == 1
            and d.execute_script(
                "const p = document.querySelector('#charts polyline.cpu');"
                " return p ? p.getAttribute('points').split(' ').filter(Boolean).length : 0"
            )
            >= 3
        )
    )
    assert texts(browser, "#charts figure:not(#memory-chart) figcaption")[0].startswith("vCPU 0: ")
    # Its memory: as defined (64 MiB), and its balloon's.
    memory = wait(browser).until(lambda d: dict(r[:2] for r in cells(d, "#memory")) or None)
    assert memory["Defined"] == "64 MiB"
    assert memory["Balloon (what it has)"] == "64 MiB"
    chart = wait(browser).until(lambda d: texts(d, "#memory-chart figcaption"))
    assert chart[0].startswith("Memory: balloon 64 MiB"), chart
    # The fleet page: the host's memory in use, from its first heartbeat on.

    def host_memory(driver: Any) -> list[str] | None:
        driver.get(url + "/")
        rows = wait(driver).until(lambda d: cells(d, "#hosts"))
        return rows[0] if "% of" in rows[0][4] else None

    host = wait(browser, 30).until(host_memory)
    assert host[4].endswith("GiB") or host[4].endswith("MiB")
    # The CPU map: each node's memory, as libvirt's capabilities of the host say.
    browser.get(url + "/cpus")
    nodes = wait(browser).until(lambda d: texts(d, ".node h2"))
    assert all(h.endswith(" of memory") for h in nodes), nodes
    # The activity timeline has the repair, with its time.
    browser.get(url + "/activity")
    repairs = wait(browser).until(
        lambda d: [r for r in cells(d, "#timeline") if r[1] == "Repairs" and guest in r[2]]
    )
    assert repairs[0][2] == f"{guest}: vcpupin.0 1 → 0", repairs
    assert repairs[0][0].endswith(("ago)", "(just now)")), repairs


def test_the_fleet_page_at_phone_width_and_by_keyboard(
    browser: Any,
    served: Served,
    db: str,
    run: Cli,
) -> None:
    """At 390x844 nothing scrolls sideways; from the keyboard alone the skip link
    comes first, and a filter typed and sent with Enter filters."""
    run("policy", "set", "web", "--label", "tier=front")
    run("policy", "set", "db", "--weight", "200")
    _daemon, url = served()
    browser.set_window_size(390, 844)
    browser.get(url + "/")
    wait(browser).until(lambda d: len(cells(d, "#guests")) == 3)
    wide = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert wide[0] <= wide[1], wide
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    for _ in range(20):  # on to the name filter, by Tab alone
        browser.switch_to.active_element.send_keys(Keys.TAB)
        if browser.switch_to.active_element.get_attribute("name") == "q":
            break
    focused = browser.switch_to.active_element
    assert focused.get_attribute("name") == "q"
    assert focused.find_element(By.XPATH, "..").text.startswith("Name")  # labelled
    focused.send_keys("we", Keys.ENTER)
    wait(browser).until(lambda d: [r[0] for r in cells(d, "#guests")] == ["web"])


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[str]:
    """Another website: a blank page served from another loopback port."""
    import functools  # noqa: PLC0415
    import http.server  # noqa: PLC0415
    import threading  # noqa: PLC0415

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<!doctype html><title>elsewhere</title>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=tmp_path / "site")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    server.server_close()


def test_a_page_of_another_origin_changes_nothing(
    browser: Any,
    served: Served,
    elsewhere: str,
    db: str,
    run: Cli,
) -> None:
    """A page of another website, open in the operator's browser beside the
    tunnel, sends what any page can without asking first: text/plain
    ``no-cors`` POSTs to /v1/apply and /v1/jobs, and a form post. Nothing is
    written and no job is recorded (each of these once wrote or stopped)."""
    run("policy", "set", "db", "--weight", "200")
    _daemon, url = served()
    before = snapshot(db)
    jobs_before = run("jobs", "-o", "json").stdout
    browser.get(elsewhere)
    sent = browser.execute_async_script(
        """const [target, done] = [arguments[0], arguments[arguments.length - 1]];
        const plain = (path, body) => fetch(target + path, {method: 'POST', mode: 'no-cors',
            headers: {'Content-Type': 'text/plain'}, body});
        Promise.all([
          plain('/v1/apply', '{"guest": "db", "cpu": {"weight": 1}}'),
          plain('/v1/jobs', '{"action": "stop", "all": true}'),
          fetch(target + '/v1/apply', {method: 'POST', mode: 'no-cors',
            body: new URLSearchParams({guest: 'db'})}),
        ]).then(rs => done(rs.map(r => r.type)), e => done(String(e)));""",
        url,
    )
    assert sent == ["opaque", "opaque", "opaque"]  # sent, answers hidden from the page
    assert snapshot(db) == before
    assert run("jobs", "-o", "json").stdout == jobs_before


def test_the_activity_page_lists_the_jobs_run(
    browser: Any,
    served: Served,
    db: str,
    run: Cli,
) -> None:
    """The activity page: before any job, says there is none, and what the
    timeline would show and which tuners run; then a job run through the
    daemon has its row with its time (local, and how long ago), how long it
    took, its host, actor and each guest's result, and its own steps; the
    timeline has the guest stopping, with its time."""
    run("policy", "set", "db", "--weight", "200")
    daemon, url = served()
    browser.get(url + "/activity")
    empty = wait(browser).until(lambda d: texts(d, "#jobs p.empty") and texts(d, "#timeline p"))
    assert texts(browser, "#jobs p.empty")[0].startswith("No job yet")
    assert texts(browser, "#timeline p")[0].endswith("Tuners running: static."), empty
    assert run("--server", str(daemon.socket), "stop", "db").exit_code == 0
    host = json.loads(run("--server", str(daemon.socket), "hosts", "-o", "json").stdout)[0]["name"]
    rows = wait(browser).until(lambda d: [r for r in cells(d, "#jobs") if r[2] == "succeeded"])
    job, action, _state, started, took, on, _actor, guests = rows[0]
    assert action == "stop"
    assert started.endswith(("(just now)", "s ago)")), started
    assert took.endswith(" s"), took
    assert on == host
    assert guests == "db: stopped"
    browser.find_element(By.LINK_TEXT, job).click()
    steps = wait(browser).until(lambda d: cells(d, "#job-detail"))
    assert [r[0] for r in steps] == ["db"]
    assert steps[0][2] == "stopped"
    browser.find_element(By.NAME, "lifecycle").click()  # guests started and stopped
    line = wait(browser).until(
        lambda d: [r for r in cells(d, "#timeline") if r[2].startswith("db: stopped")]
    )
    assert line[0][0].endswith(("(just now)", "s ago)")), line
    assert not browser.find_element(By.ID, "error").is_displayed()


DOC_SHOTS = Path(__file__).parents[2] / "docs" / "screenshots"
PAGES = {
    "fleet": ("/", "#guests tbody tr"),
    "guest": ("/guests/web", "#why li"),
    "graph": ("/graph", "svg.graph rect.node"),
    "cpus": ("/cpus", ".cpu"),
    "activity": ("/activity", "#jobs tbody tr"),
}


def test_every_page_at_desktop_and_phone_size_for_the_docs(
    browser: Any,
    served: Served,
    db: str,
    run: Cli,
) -> None:
    """Each page, on a host with a guest held back and a job run, at 1280x800
    and 390x844: rendered with no error and nothing to scroll sideways; the
    screenshots are the ones docs/web.md shows (written again by each run)."""
    run("policy", "set", "web", "--requires", "api", "--label", "tier=front")
    run("policy", "set", "api", "--requires", "db")
    run(
        "policy",
        "set",
        "db",
        "--weight",
        "200",
        "--memory-balloon",
        "auto",
        "--memory-floor",
        "32M",
    )
    daemon, url = served()
    assert run("--server", str(daemon.socket), "stop", "db").exit_code == 0
    DOC_SHOTS.mkdir(exist_ok=True)
    for width, height in ((390, 844), (1280, 800)):
        browser.set_window_size(width, height)
        for name, (path, ready) in PAGES.items():
            browser.get(url + path)  # ten pages in a row: each lets go of its streams
            wait(browser).until(lambda d, css=ready: d.find_elements(By.CSS_SELECTOR, css))
            assert not browser.find_element(By.ID, "error").is_displayed(), (name, width)
            wide = browser.execute_script(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert wide[0] <= wide[1], (name, width, wide)
            browser.save_screenshot(str(DOC_SHOTS / f"{name}-{width}x{height}.png"))
