"""The HTTP API, in-process, with callers identified the way the server does it."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BROKEN_DOC, break_policy, snapshot
from tests.strategies import BODIES, NASTY_TEXT
from virtpolicy.api.app import create_app
from virtpolicy.api.auth import PEER_KEY, Listener, digest, new_token
from virtpolicy.engine.jobs.run import JobRequest
from virtpolicy.engine.runtime.bus import Event, EventBus
from virtpolicy.engine.tuners.monitor import Monitor
from virtpolicy.engine.tuners.run import Decision, Tuners
from virtpolicy.engine.tuning.placing import HostPlacement
from virtpolicy.engine.tuning.reconcile import GuestStatus
from virtpolicy.hypervisor.native import Field
from virtpolicy.hypervisor.stats import GuestCounters, Sample, VcpuCounters
from virtpolicy.loopguard import guarded
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store import SqlStore
from virtpolicy.store.base import Revision

pytestmark = pytest.mark.integration

ROOT, ALICE = (1, 0, 0), (2, 1000, 1000)
JSON = "application/json"


class FakeDaemon:
    """Stands in for the controller; what the daemon does is tested on libvirtd."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.events = EventBus()
        self.events.close()  # a stream ends at once; the daemon's is tested on libvirtd
        self.states = {"db": "running"}
        self.loop_thread: int | None = None
        self.hook_threads: list[int] = []
        self.monitor = Monitor(interval=5)
        self.tuners = Tuners([])
        for t, cpu in ((0.0, 0), (5.0, 2_000_000_000)):
            web = GuestCounters("web", 1, cpu, (VcpuCounters(cpu, 0, None),), 4, 65536, 65536)
            self.monitor.ingest(Sample(t, 1e9 + t, {"web": web}, ((cpu, 0),)), 0.001)

    def this_host(self) -> str:
        return "test-host"

    def guest_states(self) -> dict[str, str]:
        return self.states

    def placement(self, host: str | None = None) -> dict[str, Any] | None:
        """Nothing placed: placement is tested on the test driver and libvirtd."""
        return HostPlacement().view() if host in (None, "test-host") else None

    def utilization(self, *groups: str) -> Monitor:
        self.monitor.want(*groups)
        return self.monitor

    def tuner_info(self) -> dict[str, Any]:
        return {"running": self.tuners.names, "dry_run": self.tuners.dry_run}

    def decisions(self, guest: str | None, limit: int) -> list[Decision]:
        return self.tuners.decisions(guest, limit)

    def subscribe(
        self, after: int | None, kinds: set[str], idle: float
    ) -> AsyncIterator[Event | None]:
        return self.events.subscribe(after, kinds, idle=idle)

    def recent_events(self, kinds: set[str], limit: int) -> list[Event]:
        return self.events.recent(kinds, limit)

    async def submit(self, request: JobRequest, actor: str) -> dict[str, Any]:
        """Records the job as the daemon does; running it is tested on libvirtd."""
        job = self.store.add_job(
            request.action,
            request.model_dump(exclude_defaults=True),
            request.guests,
            runner="daemon",
            host="h",
            process="1:1",
            actor=actor,
        )
        return job.to_dict()

    def job(self, job_id: int) -> dict[str, Any] | None:
        return None

    def statuses(self) -> list[GuestStatus]:
        return [
            GuestStatus(
                "web",
                1,
                "running",
                drift={Field("vcpupin", vcpu=0): (frozenset(range(4)), frozenset({1}))},
            )
        ]

    def policies(self) -> dict[str, GuestPolicy]:
        return {s.policy.guest: s.policy for s in self.store.list_policies()}

    async def every_policy(self) -> dict[str, GuestPolicy]:
        return self.policies()

    def host_info(self) -> dict[str, Any]:
        return {"uri": "test:///x", "connected": True, "cpus": 4, "fleet": {"store": "ok"}}

    def notify(self, written: Sequence[Revision]) -> None:
        """The real daemon reconciles; test_sockets checks that end to end."""

    async def migration(
        self, guest: str, vcpus: int | None = None, to: str | None = None
    ) -> list[str]:
        return []

    async def admission(self, guest: str) -> list[str]:
        self.loop_thread = threading.get_ident()
        return [] if guest != "web" else ["web requires db (running): db is shut off"]

    def hook_event(self, guest: str, operation: str, phase: str) -> None:
        """Records where it ran: the real daemon's states belong to its loop's thread."""
        self.hook_threads.append(threading.get_ident())


def client(
    store: SqlStore, listener: Listener, peer: tuple[int, int, int] | None = ROOT
) -> TestClient:
    """A client of the app on ``listener``, its requests coming from ``peer``."""
    app: FastAPI = create_app(guarded(store, "store"), listener, FakeDaemon(store))

    async def with_peer(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, PEER_KEY: peer} if peer else scope, receive, send)

    return TestClient(with_peer)  # type: ignore[arg-type]


@pytest.fixture
def rw(store: SqlStore) -> Iterator[TestClient]:
    with client(store, "unix") as c:
        yield c


def test_put_get_roundtrip(rw: TestClient) -> None:
    """PUT creates (201, ETag), GET returns the canonical policy and the same ETag."""
    r = rw.put("/v1/policies/web", json={"cpu": {"vcpus": "0-3,^2", "weight": 200}})
    assert (r.status_code, r.headers["etag"], r.json()) == (
        201,
        '"1"',
        {
            "guest": "web",
            "action": "create",
            "revision": 1,
            "changes": ["+cpu.vcpus=0-1,3", "+cpu.weight=200"],
        },
    )
    r = rw.get("/v1/policies/web")
    assert r.headers["etag"] == '"1"'
    assert r.json()["policy"] == {"guest": "web", "cpu": {"vcpus": "0-1,3", "weight": 200}}
    assert r.json()["updated_by"] == "root"


def test_patch_and_history(rw: TestClient) -> None:
    """PATCH merges; history lists both revisions with the actor from the socket peer."""
    rw.put("/v1/policies/web", json={"cpu": {"weight": 200}, "labels": {"a": "1"}})
    r = rw.patch("/v1/policies/web", json={"cpu": {"cap": 50}, "labels": {"a": None}})
    assert (r.status_code, r.json()["revision"]) == (200, 2)
    assert rw.get("/v1/policies/web").json()["policy"] == {
        "guest": "web",
        "cpu": {"weight": 200, "cap": 50},
    }
    history = rw.get("/v1/policies/web/history").json()
    assert [(h["revision"], h["action"], h["actor"]) for h in history] == [
        (1, "create", "root"),
        (2, "update", "root"),
    ]
    assert history[1]["change"] == "+cpu.cap=50, -labels.a"


def test_if_match(rw: TestClient, db: str) -> None:
    """A write with the current ETag succeeds; a stale one gets 412 and changes nothing."""
    rw.put("/v1/policies/web", json={"cpu": {"weight": 1}})
    assert (
        rw.put(
            "/v1/policies/web", json={"cpu": {"weight": 2}}, headers={"If-Match": '"1"'}
        ).status_code
        == 200
    )
    before = snapshot(db)
    for method in ("put", "patch"):
        r = rw.request(
            method, "/v1/policies/web", json={"cpu": {"weight": 3}}, headers={"If-Match": '"1"'}
        )
        assert r.status_code == 412
        assert r.json()["error"]["type"] == "PreconditionFailedError"
    assert rw.delete("/v1/policies/web", headers={"If-Match": '"1"'}).status_code == 412
    assert snapshot(db) == before
    assert rw.delete("/v1/policies/web", headers={"If-Match": '"2"'}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        (
            "put",
            "/v1/policies/web",
            {"cpu": {"weight": 0}},
            422,
            "cpu.weight: 0 is below the minimum 1",
        ),
        (
            "put",
            "/v1/policies/web",
            {"cpu": {"vcpupin": {"1": "0-"}}},
            422,
            'cpu.vcpupin[1]: "0-" is not a cpuset: range has no end (at 2)',
        ),
        (
            "put",
            "/v1/policies/web",
            {"guest": "db"},
            422,
            'guest: "db" does not match the URL ("web")',
        ),
        (
            "put",
            "/v1/policies/web",
            {"requires": [{"guest": "web"}]},
            422,
            'requires[0].guest: "web" is the guest itself',
        ),
        (
            "put",
            "/v1/policies/db",
            {"requires": [{"guest": "web"}]},
            409,  # a conflict with the stored graph
            "dependency cycle: db -> web -> db",
        ),
        ("put", "/v1/policies/web", [1, 2], 422, "body: must be a JSON object"),
        (
            "patch",
            "/v1/policies/web",
            {"cpu": {"cap": -1}},
            422,
            "cpu.cap: -1 is below the minimum 1",
        ),
        ("patch", "/v1/policies/web", {"colour": "red"}, 422, "colour: unknown field"),
        ("get", "/v1/policies/nope", None, 404, "nope: no policy"),
        ("delete", "/v1/policies/nope", None, 404, "nope: no policy"),
        ("get", "/v1/policies/nope/history", None, 404, "nope: no policy history"),
        ("get", "/v1/plan/restart", None, 404, 'no plan "restart": start or stop'),
        ("get", "/v1/policies?label=novalue", None, 422, 'label: "novalue" is not KEY=VALUE'),
        (
            "put",
            "/v1/policies/web",
            {"cpu": {"weight": 5}},
            422,
            'If-Match: "abc" is not a revision ETag',
        ),
    ],
)
def test_bad_requests(
    rw: TestClient, db: str, method: str, path: str, body: Any, status: int, message: str
) -> None:
    """Each bad request gets its status and one-line message, and changes nothing."""
    rw.put("/v1/policies/web", json={"requires": [{"guest": "db"}]})
    before = snapshot(db)
    headers = {"If-Match": "abc"} if "If-Match" in message else {}
    r = rw.request(method, path, json=body, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["message"] == message
    assert snapshot(db) == before


def test_invalid_json_body(rw: TestClient, db: str) -> None:
    """A body that is not JSON is a 422 naming the body."""
    before = snapshot(db)
    r = rw.put("/v1/policies/web", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("body: not valid JSON")
    assert snapshot(db) == before


def test_oversized_body(rw: TestClient, db: str) -> None:
    """A body over 8 MiB is refused with 413 before it is read."""
    before = snapshot(db)
    r = rw.put(
        "/v1/policies/web", content=b" " * (8 * 1024 * 1024 + 1), headers={"content-type": JSON}
    )
    assert r.status_code == 413
    assert snapshot(db) == before


def test_list_with_labels_and_plan(rw: TestClient) -> None:
    """Listing filters by label; plans come from the stored graph."""
    rw.put("/v1/policies/db", json={"labels": {"tier": "data"}})
    rw.put("/v1/policies/web", json={"requires": [{"guest": "db"}], "labels": {"tier": "fe"}})
    assert [p["guest"] for p in rw.get("/v1/policies?label=tier=fe").json()] == ["web"]
    assert rw.get("/v1/plan/start").json() == {"waves": [["db"], ["web"]]}
    assert rw.get("/v1/plan/stop?guest=db").json() == {"waves": [["web"], ["db"]]}


def test_dependents(rw: TestClient) -> None:
    """Who would be stopped before a guest, in order."""
    rw.put("/v1/policies/api", json={"requires": [{"guest": "db"}]})
    rw.put("/v1/policies/web", json={"requires": [{"guest": "api"}]})
    assert rw.get("/v1/guests/db/dependents").json() == {
        "guest": "db",
        "dependents": ["api", "web"],
        "stop_waves": [["web"], ["api"]],
    }
    assert rw.get("/v1/guests/web/dependents").json()["dependents"] == []


def test_validate_writes_nothing(rw: TestClient, db: str) -> None:
    """/v1/validate reports what would change, or the first problem, and writes nothing."""
    before = snapshot(db)
    r = rw.post(
        "/v1/validate",
        content=b'[{"guest": "a"}, {"guest": "b", "requires": [{"guest": "a"}]}]',
        headers={"content-type": JSON},
    )
    assert r.json() == {
        "valid": True,
        "changes": [
            {"guest": "a", "action": "create", "revision": 1, "changes": []},
            {"guest": "b", "action": "create", "revision": 1, "changes": ["+requires.a=running"]},
        ],
    }
    r = rw.post(
        "/v1/validate", content=b'{"guest": "a", "cpu": {"cap": 0}}', headers={"content-type": JSON}
    )
    assert (r.status_code, r.json()["error"]["message"]) == (
        422,
        "body, document 1 (a): cpu.cap: 0 is below the minimum 1",
    )
    assert snapshot(db) == before


def test_status_and_host(rw: TestClient) -> None:
    """Status and host info come from the daemon."""
    assert rw.get("/v1/status").json()[0]["drift"] == {
        "vcpupin.0": {"actual": "0-3", "desired": "1"}
    }
    assert rw.get("/v1/guests/web/status").json()["guest"] == "web"
    assert rw.get("/v1/guests/nope/status").status_code == 404
    assert rw.get("/v1/host").json()["cpus"] == 4


def test_read_only_socket_refuses_writes(store: SqlStore, db: str) -> None:
    """On the read-only socket reads work and every write is 403, changing nothing."""
    with client(store, "unix") as rw_client:
        rw_client.put("/v1/policies/web", json={"cpu": {"weight": 5}})
    before = snapshot(db)
    with client(store, "unix-ro", ALICE) as ro:
        assert ro.get("/v1/policies/web").status_code == 200
        for method in ("put", "patch", "delete"):
            r = ro.request(method, "/v1/policies/web", json={"cpu": {"weight": 9}})
            assert r.status_code == 403
            # The peer's name is whatever uid 1000 is called here ("uid 1000" if nobody).
            assert r.json()["error"]["message"].endswith(
                " is a reader; this needs the operator role"
            )
    assert snapshot(db) == before


def test_tcp_needs_a_token_with_the_right_role(store: SqlStore, db: str) -> None:
    """Over TCP: no token 401, unknown token 401, reader 403 on writes, operator writes."""
    reader, operator = new_token(), new_token()
    store.add_token("dash", "reader", digest(reader), "root")
    store.add_token("ci", "operator", digest(operator), "root")
    with client(store, "tcp", peer=None) as tcp:
        before = snapshot(db)
        assert tcp.get("/v1/policies").status_code == 401
        assert (
            tcp.get("/v1/policies", headers={"Authorization": "Bearer vpt_wrong"}).status_code
            == 401
        )
        assert tcp.get("/v1/policies", headers={"Authorization": "Basic xyz"}).status_code == 401
        as_reader = {"Authorization": f"Bearer {reader}"}
        assert tcp.get("/v1/policies", headers=as_reader).status_code == 200
        r = tcp.put("/v1/policies/web", json={}, headers=as_reader)
        assert (r.status_code, r.json()["error"]["message"]) == (
            403,
            "token:dash is a reader; this needs the operator role",
        )
        assert snapshot(db) == before
        r = tcp.put(
            "/v1/policies/web",
            json={"cpu": {"cap": 10}},
            headers={"Authorization": f"Bearer {operator}"},
        )
        assert r.status_code == 201
    assert store.history("web")[0].actor == "token:ci"
    assert all(t.name != reader for t in store.tokens())


def test_tokens_are_stored_hashed(store: SqlStore) -> None:
    """The store never holds a token's secret, only its SHA-256."""
    secret = new_token()
    store.add_token("ci", "operator", digest(secret), "root")
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM tokens").all()
    assert secret not in repr(rows)
    assert digest(secret) in repr(rows)


HOSTILE = [
    ("put", "/v1/policies/web", b"[" * 100_000 + b"]" * 100_000, {}, "body"),
    ("put", "/v1/policies/web", b'{"cpu": {"weight": ' + b"9" * 5000 + b"}}", {}, "body"),
    ("post", "/v1/apply", b"guest: web\ncpu:\n  cap: " + b"9" * 5000 + b"\n", {}, "body"),
    ("post", "/v1/validate", b"[" * 100_000, {}, "body"),
    ("patch", "/v1/policies/web", b'{"requires": ["db"]}', {}, "requires"),
    ("patch", "/v1/policies/web", b'{"requires": {"db": "x"}}', {}, "requires.db"),
    ("patch", "/v1/policies/web", b'{"cpu": {"weight": 7}}', {"If-Match": b'"\xb2"'}, "If-Match"),
    ("patch", "/v1/policies/web", b'{"requires": {"db": {"when": "tcp:db:\xc2\xb2"}}}', {}, "port"),
    ("post", "/v1/jobs", b'{"action": "start", "guests": ' + b"[" * 50_000 + b"}", {}, "body"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "named"), HOSTILE)
def test_hostile_input_is_refused_by_field(
    rw: TestClient,
    db: str,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, Any],
    named: str,
) -> None:
    """Deep nesting, 5,000-digit integers, malformed patches and non-ASCII digits get a 4xx
    naming the field, and change nothing."""
    rw.put("/v1/policies/web", json={"requires": [{"guest": "db"}]})
    before = snapshot(db)
    r = rw.request(
        method,
        path,
        content=body,
        headers={"content-type": "application/json", **headers},
    )
    assert 400 <= r.status_code < 500, r.text
    assert named in r.json()["error"]["message"]
    assert snapshot(db) == before


def test_last_event_id_in_other_digits_is_refused(rw: TestClient) -> None:
    """Last-Event-ID: ² (a digit to str.isdigit, not to int) is a 422 naming the header."""
    r = rw.get("/v1/events", headers={"Last-Event-ID": b"\xb2"})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "Last-Event-ID"


WRITES = [
    ("put", "/v1/policies/web"),
    ("patch", "/v1/policies/web"),
    ("post", "/v1/apply"),
    ("post", "/v1/validate"),
    ("post", "/v1/jobs"),
]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    target=st.sampled_from(WRITES),
    body=BODIES,
    if_match=st.none() | NASTY_TEXT,
)
def test_any_body_gets_an_answer_never_a_server_error(
    tmp_path_factory: pytest.TempPathFactory,
    target: tuple[str, str],
    body: bytes,
    if_match: str | None,
) -> None:
    """Arbitrary JSON and YAML documents (and bytes) to every write get 2xx or a 4xx in the
    one error shape; a refused write changes nothing."""
    db = str(tmp_path_factory.mktemp("hostile") / "p.db")
    store = SqlStore(db)
    try:
        with client(store, "unix") as c:
            c.put("/v1/policies/db", json={"labels": {"tier": "data"}})
            before = snapshot(db)
            headers: dict[str, Any] = {"content-type": "application/json"}
            if if_match is not None and if_match.isprintable():
                headers["If-Match"] = if_match.encode("latin-1", "replace")
            r = c.request(target[0], target[1], content=body, headers=headers)
            assert r.status_code < 500, r.text
            if r.status_code >= 400:
                error = r.json()["error"]
                assert error["message"]
                assert "\n" not in error["message"]
                assert snapshot(db) == before
    finally:
        store.close()


def test_only_an_admin_writes_exec_conditions(store: SqlStore, db: str) -> None:
    """An operator's PUT, PATCH or apply that adds an exec: condition is a 403 naming the
    field and writes nothing; an admin may, and an operator may then change other fields."""
    exec_dep = {"requires": [{"guest": "db", "when": "exec:touch /tmp/x"}]}
    with client(store, "unix", ALICE) as operator, client(store, "unix", ROOT) as admin:
        before = snapshot(db)
        for r in (
            operator.put("/v1/policies/web", json=exec_dep),
            operator.patch(
                "/v1/policies/web", json={"requires": {"db": {"when": "exec:touch /tmp/x"}}}
            ),
            operator.post("/v1/apply", json=[{"guest": "web", **exec_dep}]),
        ):
            assert r.status_code == 403, r.text
            assert r.json()["error"]["field"] == "requires.db.when"
        assert snapshot(db) == before
        assert admin.put("/v1/policies/web", json=exec_dep).status_code == 201
        assert operator.patch("/v1/policies/web", json={"cpu": {"weight": 200}}).status_code == 200


def test_hook_reports_run_on_the_loop(store: SqlStore) -> None:
    """A hook report reaches the daemon on the event loop's thread (where admission runs),
    not in a worker thread racing the loop over the guest states."""
    daemon = FakeDaemon(store)
    app = create_app(store, "hook", daemon)

    async def as_root(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, PEER_KEY: ROOT}, receive, send)

    with TestClient(as_root) as c:  # type: ignore[arg-type]
        assert c.get("/v1/guests/db/admission").status_code == 200
        assert c.post("/v1/hook/db/started/begin").status_code == 204
    assert daemon.hook_threads == [daemon.loop_thread]


def test_a_bad_condition_is_refused_and_the_store_keeps_nothing(rw: TestClient, db: str) -> None:
    """The writes that once killed the daemon (a host its resolver chokes on) or
    poisoned the store (``tcp:[[]]:80``, stored as ``tcp:[]:80``, which no longer
    validated) are refused with 422 naming the field, and nothing is written."""
    before = snapshot(db)
    for when in ("tcp:" + "a" * 64 + ":80", "tcp:a..b:80", "tcp:a\x00b:80", "tcp:[[]]:80"):
        r = rw.put("/v1/policies/x2", json={"requires": [{"guest": "db", "when": when}]})
        assert r.status_code == 422, when
        assert r.json()["error"]["field"] == "requires[0].when"
        assert "is not a condition" in r.json()["error"]["message"]
    assert snapshot(db) == before


def test_a_broken_stored_policy_is_listed_and_can_be_replaced_or_deleted(
    rw: TestClient, store: SqlStore
) -> None:
    """A stored policy that no longer loads: GET answers 409 in one line, the list
    shows it broken beside the others, and PUT replaces it or DELETE removes it."""
    rw.put("/v1/policies/x2", json={})
    rw.put("/v1/policies/web", json={"cpu": {"weight": 5}})
    break_policy(store, "x2", BROKEN_DOC)
    r = rw.get("/v1/policies/x2")
    assert (r.status_code, r.json()["error"]["type"]) == (409, "BrokenPolicyError")
    listed = {item["guest"]: item for item in rw.get("/v1/policies").json()}
    assert listed["web"]["policy"]["cpu"] == {"weight": 5}
    assert listed["x2"]["policy"] is None
    assert "tcp:[]:80" in listed["x2"]["broken"]
    assert rw.get("/v1/policies/x2/history").status_code == 200
    r = rw.put("/v1/policies/x2", json={"cpu": {"weight": 6}})
    assert (r.status_code, r.json()["action"]) == (200, "update")
    assert rw.get("/v1/policies/x2").json()["policy"]["cpu"] == {"weight": 6}
    break_policy(store, "x2", BROKEN_DOC)
    assert rw.delete("/v1/policies/x2").status_code == 200
    assert [item["guest"] for item in rw.get("/v1/policies").json()] == ["web"]


POLICY = b'{"guest": "web", "cpu": {"weight": 5}}'


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/apply", "text/plain"),
        ("/v1/apply", "application/x-www-form-urlencoded"),
        ("/v1/apply", "multipart/form-data; boundary=x"),
        ("/v1/apply", "application/xml"),
        ("/v1/apply", None),
        ("/v1/validate", "text/plain"),
        ("/v1/jobs", "text/plain"),
        ("/v1/jobs", "application/yaml"),
    ],
)
def test_a_body_that_is_not_json_is_refused(
    rw: TestClient, db: str, path: str, content_type: str | None
) -> None:
    """A body sent as text, a form or XML (what a page of another site can send
    without asking) is refused with 415 naming the type, before it is read: it
    was parsed as JSON, and a text/plain POST to /v1/apply wrote a policy."""
    before = snapshot(db)
    headers = {"content-type": content_type} if content_type else {}
    body = b'{"action": "stop", "all": true}' if path == "/v1/jobs" else POLICY
    r = rw.post(path, content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["error"]["field"] == "Content-Type"
    assert snapshot(db) == before
    assert rw.get("/v1/jobs").json() == []


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"origin": "http://testserver.evil.example"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "http://testserver", "sec-fetch-site": "cross-site"},
    ],
)
def test_a_request_from_another_origin_changes_nothing(
    rw: TestClient, db: str, headers: dict[str, str]
) -> None:
    """Writes, jobs and deletes from a page of another origin get 403 naming the
    header, and change nothing: through the tunnel to the read-write socket, a
    page the operator opened wrote a policy and stopped a guest."""
    rw.put("/v1/policies/db", json={})
    before = snapshot(db)
    sent = {**headers, "content-type": JSON}
    for method, path, body in [
        ("POST", "/v1/apply", POLICY),
        ("PUT", "/v1/policies/web", POLICY),
        ("PATCH", "/v1/policies/db", b'{"cpu": {"weight": 9}}'),
        ("DELETE", "/v1/policies/db", b""),
        ("POST", "/v1/jobs", b'{"action": "stop", "all": true}'),
    ]:
        r = rw.request(method, path, content=body, headers=sent)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["field"] in ("Origin", "Sec-Fetch-Site")
    assert snapshot(db) == before
    assert rw.get("/v1/jobs").json() == []


def test_the_pages_own_origin_may_write(rw: TestClient) -> None:
    """The daemon's own page (same origin, as the browser says) writes as before."""
    own = {"origin": "http://testserver", "sec-fetch-site": "same-origin"}
    r = rw.put("/v1/policies/web", content=POLICY, headers={**own, "content-type": JSON})
    assert r.status_code == 201


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["POST", "PUT", "PATCH", "DELETE"]),
    path=st.sampled_from(
        ["/v1/apply", "/v1/validate", "/v1/jobs", "/v1/policies/web", "/v1/policies/db", "/v1/x"]
    ),
    origin=st.from_regex(r"[!-~]([ -~]{0,28}[!-~])?", fullmatch=True).filter(
        lambda o: o != "http://testserver"
    ),
)
def test_any_state_changing_request_from_another_origin_is_refused(
    rw: TestClient, db: str, method: str, path: str, origin: str
) -> None:
    """For every method that changes state, path and origin other than the page's
    own: 403, nothing written."""
    before = snapshot(db)
    r = rw.request(method, path, content=POLICY, headers={"origin": origin, "content-type": JSON})
    assert r.status_code == 403
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/apply", b'[{"guest": "x\\ud800"}]'),
        ("/v1/validate", b'{"guest": "a", "labels": {"k": "v\\udfff"}}'),
        ("/v1/apply", b'{"guest": "a", "requires": [{"guest": "\\ud800"}]}'),
        ("/v1/policies/web", b'{"labels": {"k": "\\ud800"}}'),
        ("/v1/jobs", b'{"action": "start", "guests": ["\\ud800"]}'),
        ("/v1/apply", b'{"guest": "a", "guest": "b"}'),
        ("/v1/apply", b'{"guest": "a", "cpu": {"vcpus": "' + b"0-16383," * 25000 + b'"}}'),
    ],
)
def test_bad_text_in_a_body_is_a_refusal(rw: TestClient, db: str, path: str, body: bytes) -> None:
    """A lone surrogate, a key twice or a 200 kB cpuset: 422 naming it, never a
    500 (a surrogate reached the store's encoder), nothing written."""
    before = snapshot(db)
    method = "PUT" if path.startswith("/v1/policies/") else "POST"
    r = rw.request(method, path, content=body, headers={"content-type": JSON})
    assert r.status_code == 422, r.text
    assert "\n" not in r.json()["error"]["message"]
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "target", ["/v1/policies/%ff", "/v1/policies?label=a%3D%ff", "/v1/plan/start?guest=%ed%a0%80"]
)
def test_a_path_or_query_that_is_not_utf8_is_a_400(rw: TestClient, target: str) -> None:
    """Bytes that are not UTF-8 in the path or the query: 400 naming where."""
    r = rw.get(target)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "RequestError"


#: Every header the API reads.
READ_HEADERS = [
    *("authorization", "if-match", "last-event-id", "content-type", "origin"),
    *("sec-fetch-site", "accept", "content-length", "host"),
]
HEADER_BYTES = st.binary(max_size=40).filter(
    lambda b: not any(c in b for c in b"\r\n\x00") and b == b.strip(b" \t")
)


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.sampled_from(READ_HEADERS),
    value=HEADER_BYTES,
    target=st.sampled_from(
        [
            ("GET", "/v1/policies"),
            ("PUT", "/v1/policies/web"),
            ("PATCH", "/v1/policies/web"),
            ("DELETE", "/v1/policies/web"),
            ("POST", "/v1/apply"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/status"),
            ("GET", "/v1/guests/web/admission"),
        ]
    ),
)
def test_any_header_value_gets_an_answer_not_a_server_error(
    rw: TestClient, db: str, header: str, value: bytes, target: tuple[str, str]
) -> None:
    """Arbitrary bytes (latin-1, not UTF-8, anything a client can put in a header)
    in any header the API reads: never a 5xx; a refusal writes nothing."""
    method, path = target
    before = snapshot(db)
    body = b'{"action": "stop", "all": true}' if path == "/v1/jobs" else POLICY
    headers = {"content-type": JSON, header: value}
    if header == "content-length":
        headers[header] = str(len(body)).encode() if not value.isdigit() else value
    r = rw.request(method, path, content=body, headers=headers)
    assert r.status_code < 500, (r.status_code, r.text[:200])
    if r.status_code >= 400:
        assert snapshot(db) == before


#: A merge patch that sets each field of the model (with what it needs beside it).
FIELD_PATCHES: dict[str, dict[str, Any]] = {
    "cpu.vcpupin": {"cpu": {"vcpupin": {"0": "1"}}},
    "cpu.vcpus": {"cpu": {"vcpus": "0-1"}},
    "cpu.allowed": {"cpu": {"vcpus": "auto", "allowed": "0-3"}},
    "cpu.emulatorpin": {"cpu": {"emulatorpin": "0"}},
    "cpu.weight": {"cpu": {"weight": 200}},
    "cpu.cap": {"cpu": {"cap": 150}},
    "cpu.placement": {"cpu": {"placement": "dedicated"}},
    "cpu.threads": {"cpu": {"placement": "dedicated", "threads": "isolate"}},
    "cpu.emulator": {"cpu": {"placement": "dedicated", "emulator": "isolate"}},
    "cpu.topology": {"cpu": {"placement": "dedicated", "topology": "match"}},
    "numa.nodes": {"numa": {"nodes": 2}},
    "numa.memory": {"numa": {"nodes": 2, "memory": "strict"}},
    "memory.balloon": {"memory": {"balloon": "auto", "floor": "1G"}},
    "memory.floor": {"memory": {"floor": "512M"}},
    "memory.weight": {"memory": {"weight": 300}},
    "memory.free_page_reporting": {"memory": {"free_page_reporting": True}},
    "memory.soft_limit": {"memory": {"soft_limit": "2G"}},
    "requires": {"requires": {"db": {"when": "tcp:db:5432"}}},
    "wants": {"wants": {"db": {}}},
    "start.autostart": {"start": {"autostart": True}},
    "start.delay": {"start": {"delay": 5}},
    "stop.timeout": {"stop": {"timeout": 60}},
    "stop.action": {"stop": {"action": "destroy"}},
    "stop.escalate": {"stop": {"escalate": True}},
    "stop.on_dependency_stop": {"stop": {"on_dependency_stop": "stop"}},
    "labels": {"labels": {"tier": "data"}},
}


def _cleared(path: str) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    return {head: {rest: None}} if rest else {head: None}


@pytest.mark.parametrize("path", sorted(FIELD_PATCHES))
def test_every_field_can_be_patched_and_cleared(rw: TestClient, db: str, path: str) -> None:
    """Each field of the model set by a merge patch and removed by null; the table
    covers the model (a new field fails here until it has a row); a patch of a
    field that is not one is refused and changes nothing."""
    from tests.strategies import field_paths  # noqa: PLC0415

    assert set(FIELD_PATCHES) == set(field_paths(GuestPolicy)) - {"guest"}
    rw.put("/v1/policies/db", json={})
    r = rw.patch("/v1/policies/web", json=FIELD_PATCHES[path])
    assert r.status_code in (200, 201), r.text
    head, _, rest = path.partition(".")
    doc = rw.get("/v1/policies/web").json()["policy"]
    assert (doc[head][rest] if rest else doc[head]) not in (None, {}, [])
    before = snapshot(db)
    assert rw.patch("/v1/policies/web", json=_cleared(path + "x")).status_code == 422
    assert snapshot(db) == before
    r = rw.patch("/v1/policies/web", json=_cleared(path))
    assert r.status_code == 200, r.text
    doc = rw.get("/v1/policies/web").json()["policy"]
    assert (doc.get(head, {}).get(rest) if rest else doc.get(head)) in (None, {}, [])
