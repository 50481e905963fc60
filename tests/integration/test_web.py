"""The web page's shell and the views behind it, in-process (the browser tests
drive the page itself): escaping, assets, filters and paging, and arbitrary
input on every path and query, which gets a page or a 4xx, never a 5xx."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from tests.integration.test_api import client
from tests.strategies import NASTY_TEXT
from virtpolicy import __version__
from virtpolicy.store import SqlStore
from virtpolicy.store.base import GuestState, HostRecord

pytestmark = pytest.mark.integration


@pytest.fixture
def rw(store: SqlStore) -> Iterator[TestClient]:
    with client(store, "unix") as c:
        yield c


def test_pages_are_shells_that_load_only_their_own_assets(rw: TestClient) -> None:
    for path in ("/", "/guests/db", "/graph", "/cpus", "/activity"):
        r = rw.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert f"/static/{__version__}/app.js" in r.text
        assert "http://" not in r.text
        assert "https://" not in r.text  # nothing from the internet
    js = rw.get(f"/static/{__version__}/app.js")
    assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert js.headers["content-type"].startswith("text/javascript")
    old = rw.get("/static/0.0.1/app.css")  # a page open across an upgrade
    assert (old.status_code, old.headers["cache-control"]) == (200, "no-cache")
    for bad in ("nope.js", "..%2Fpage.html", ".hidden", "%2Fetc%2Fpasswd"):
        assert rw.get(f"/static/{__version__}/{bad}").status_code == 404, bad


def test_the_read_only_socket_says_so(store: SqlStore) -> None:
    with client(store, "unix-ro") as ro:
        assert 'id="readonly"' in ro.get("/").text
        assert ro.get("/v1/whoami").json() == {
            "actor": "root",
            "role": "reader",
            "listener": "unix-ro",
        }


def test_a_guest_name_is_text_on_its_page(rw: TestClient) -> None:
    r = rw.get("/guests/" + urllib.parse.quote('<img src=x onerror="y">', safe=""))
    assert r.status_code == 200
    assert "<img" not in r.text
    assert "&lt;img src=x onerror=&#34;y&#34;&gt;" in r.text


def test_fleet_guests_are_filtered_and_paged(rw: TestClient) -> None:
    for name, labels in (("a1", {"tier": "front"}), ("a2", {}), ("b1", {"tier": "front"})):
        assert rw.put(f"/v1/policies/{name}", json={"labels": labels}).status_code == 201
    # The fake daemon has statuses for web only; the store's are the rest; and
    # db is defined there without a policy (not in /v1/status, in the list).
    page = rw.get("/v1/fleet/guests", params={"limit": 1}).json()
    assert page["total"] == len(rw.get("/v1/status").json()) + 1
    assert len(page["guests"]) == 1
    assert rw.get("/v1/fleet/guests", params={"q": "zz"}).json() == {"total": 0, "guests": []}
    bad = rw.get("/v1/fleet/guests", params={"label": "tier"})
    assert bad.status_code == 422
    assert bad.json()["error"]["message"] == 'label: "tier" is not KEY=VALUE'
    assert rw.get("/v1/fleet/guests", params={"limit": 0}).status_code == 422
    assert rw.get("/v1/fleet/guests", params={"limit": 501}).status_code == 422


def test_a_guest_without_a_policy_is_listed_and_placed_on_the_graph(
    rw: TestClient, store: SqlStore
) -> None:
    """A defined guest without a policy is in the fleet's list, with its host, on
    this host and on another; on the graph a dependency on it shows where it is."""
    store.register_host(HostRecord("h2", "test:///x", 4, {}, "t", "up", 60.0, time.time(), "t"))
    cache = GuestState("cache", "h2", "u-cache", "running", {}, time.time())
    store.publish_guests("h2", [cache], [])
    web = {"requires": [{"guest": "db"}, {"guest": "cache"}]}
    assert rw.put("/v1/policies/web", json=web).status_code == 201
    listed = rw.get("/v1/fleet/guests").json()["guests"]
    bare = {"policy_revision": None, "state": "running", "labels": {}, "why": []}
    assert {"guest": "db", "host": "test-host", **bare} in listed  # the fake daemon's
    assert {"guest": "cache", "host": "h2", **bare} in listed
    assert rw.get("/v1/fleet/guests", params={"host": "h2"}).json()["total"] == 1
    nodes = {n["guest"]: n for n in rw.get("/v1/graph").json()["nodes"]}
    assert (nodes["cache"]["host"], nodes["cache"]["state"]) == ("h2", "running")
    assert (nodes["db"]["host"], nodes["db"]["state"]) == ("test-host", "running")
    assert [g["guest"] for g in rw.get("/v1/status").json()] == ["web"]  # policies only


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=NASTY_TEXT,
    query=st.dictionaries(
        st.sampled_from(["host", "state", "label", "problems", "q", "offset", "limit"]),
        NASTY_TEXT,
        max_size=5,
    ),
)
@example(name="0/", query={})  # an encoded "/": decoded into the path
@example(name="..", query={"offset": "٣"})
def test_any_path_or_query_gets_a_page_or_a_refusal(
    rw: TestClient, name: str, query: dict[str, str]
) -> None:
    # As a client would send them: a lone surrogate as the bytes it stands for
    # (not UTF-8, which the server refuses with a 400).
    segment = urllib.parse.quote(name.encode("utf-8", "surrogatepass"), safe="")
    page = rw.get("/guests/" + segment)
    assert page.status_code in (200, 400, 404, 422), page.text[:200]
    # A name that is one path segment (a "/", even encoded, is decoded into the
    # path; "." and ".." are resolved away) is shown as text, escaped.
    if page.status_code == 200 and "/" not in name and name not in ("", ".", ".."):
        assert f'<span class="name">{escape(name)}</span>' in page.text
    sent = "&".join(
        f"{k}={urllib.parse.quote(v.encode('utf-8', 'surrogatepass'), safe='')}"
        for k, v in query.items()
    )
    fleet = rw.get("/v1/fleet/guests?" + sent)
    assert fleet.status_code in (200, 400, 422), fleet.text[:200]
    if fleet.status_code != 200:
        assert fleet.json()["error"]["message"]
    asset = rw.get("/static/" + segment + "/app.css")
    assert asset.status_code in (200, 400, 404)


def test_reading_jobs_writes_nothing(rw: TestClient, store: SqlStore) -> None:
    """A job whose process died shows as interrupted, and stays running in the
    store until the daemon or the CLI settles it: a reader's GET writes nothing."""
    job = store.add_job(
        "start", {"guests": ["db"]}, ["db"], runner="cli", host="test-host",
        process="999999999:1", actor="t",
    )  # fmt: skip
    shown = rw.get("/v1/jobs").json()[0]
    assert (shown["id"], shown["state"]) == (job.id, "interrupted")
    assert "ended before it did" in shown["detail"]
    assert rw.get(f"/v1/jobs/{job.id}").json()["state"] == "interrupted"
    assert [j["id"] for j in rw.get("/v1/jobs", params={"state": "interrupted"}).json()] == [job.id]
    assert rw.get("/v1/jobs", params={"state": "running"}).json() == []
    assert store.job(job.id).state == "running"
