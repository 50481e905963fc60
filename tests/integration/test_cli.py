"""The command line against a real SQLite store, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BROKEN_DOC, Cli, break_policy, snapshot
from tests.strategies import BODIES, NASTY_TEXT
from virtpolicy.cli.main import cli
from virtpolicy.policy.document import MAX_FILE_BYTES
from virtpolicy.store import SqlStore

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples" / "policies.yaml"


@pytest.fixture
def seeded(run: Cli) -> Cli:
    """A store holding the example policies."""
    result = run("apply", "-f", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    return run


def test_set_get_roundtrip(run: Cli) -> None:
    """policy set stores the fields, policy get prints them as a document."""
    result = run(
        "policy",
        "set",
        "web",
        "--vcpupin",
        "0:2",
        "--vcpupin",
        "1:3-4",
        "--weight",
        "200",
        "--cap",
        "150",
        "--requires",
        "db@tcp:db:5432",
        "--wants",
        "cache",
        "--label",
        "tier=fe",
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("web: created (revision 1): ")
    doc = yaml.safe_load(run("policy", "get", "web").output)
    assert doc == {
        "guest": "web",
        "cpu": {"vcpupin": {0: "2", 1: "3-4"}, "weight": 200, "cap": 150},
        "requires": [{"guest": "db", "when": "tcp:db:5432"}],
        "wants": [{"guest": "cache"}],
        "labels": {"tier": "fe"},
    }
    assert json.loads(run("policy", "get", "web", "-o", "json").output) == json.loads(
        json.dumps(doc)
    )


def test_set_changes_only_given_fields(run: Cli) -> None:
    """A second set keeps what it does not mention; --clear removes a field."""
    run("policy", "set", "web", "--weight", "200", "--cap", "50", "--label", "a=1")
    result = run("policy", "set", "web", "--weight", "300", "--clear", "cpu.cap")
    assert result.output == "web: updated (revision 2): -cpu.cap, cpu.weight: 200 -> 300\n"
    doc = yaml.safe_load(run("policy", "get", "web").output)
    assert doc == {"guest": "web", "cpu": {"weight": 300}, "labels": {"a": "1"}}


def test_set_same_value_is_unchanged(run: Cli) -> None:
    """Setting a field to its current value makes no revision."""
    run("policy", "set", "web", "--weight", "200")
    assert run("policy", "set", "web", "--weight", "200").output == "web: unchanged (revision 1)\n"


def test_if_revision_conflict_exit_3(db: str, run: Cli) -> None:
    """A stale --if-revision exits 3 and writes nothing; the right one writes."""
    run("policy", "set", "web", "--weight", "1")
    run("policy", "set", "web", "--weight", "2")
    before = snapshot(db)
    result = run("policy", "set", "web", "--weight", "3", "--if-revision", "1")
    assert result.exit_code == 3
    assert result.output == (
        "error: web: revision is 2, not 1: someone else changed it; read it again and retry\n"
    )
    assert snapshot(db) == before
    assert run("policy", "set", "web", "--weight", "3", "--if-revision", "2").exit_code == 0
    assert run("policy", "delete", "web", "--if-revision", "2").exit_code == 3


def test_list_and_label_selector(seeded: Cli) -> None:
    """policy list shows one row per guest; --label narrows it."""
    lines = seeded("policy", "list").output.splitlines()
    assert lines[0].split() == [
        "GUEST",
        "REV",
        "PINNING",
        "WEIGHT",
        "CAP",
        "REQUIRES",
        "WANTS",
        "LABELS",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["api", "batch", "cache", "db", "web"]
    data = json.loads(seeded("policy", "list", "--label", "tier=data", "-o", "json").output)
    assert [d["guest"] for d in data] == ["cache", "db"]


def test_history_and_diff(seeded: Cli) -> None:
    """history lists each revision with its change; diff shows it as a unified diff."""
    seeded("policy", "set", "web", "--weight", "300")
    seeded("policy", "delete", "web")
    rows = [line.split(None, 4) for line in seeded("policy", "history", "web").output.splitlines()]
    assert [r[0] for r in rows] == ["REV", "1", "2", "3"]
    assert [r[3] for r in rows[1:]] == ["create", "update", "delete"]
    assert rows[2][4] == "cpu.weight: 100 -> 300"
    assert rows[3][4] == "deleted"
    diff = seeded("policy", "diff", "web", "1", "2").output
    assert "-  weight: 100\n+  weight: 300\n" in diff
    entries = json.loads(seeded("policy", "history", "web", "-o", "json").output)
    assert [e["action"] for e in entries] == ["create", "update", "delete"]
    assert entries[2]["policy"] is None


def test_export_apply_export_is_byte_identical(seeded: Cli, tmp_path: Path) -> None:
    """export -> apply -f (fresh store) -> export gives the same bytes, YAML and JSON."""
    for fmt in ("yaml", "json"):
        first = seeded("export", "-o", fmt).output
        path = tmp_path / f"export.{fmt}"
        path.write_text(first)
        other = Cli(str(tmp_path / f"other-{fmt}.db"))
        assert other("apply", "-f", str(path)).exit_code == 0
        assert other("export", "-o", fmt).output == first


def test_apply_is_idempotent(seeded: Cli, db: str) -> None:
    """Applying the same file again changes nothing."""
    before = snapshot(db)
    result = seeded("apply", "-f", str(EXAMPLES))
    assert result.output == "0 created, 0 updated, 0 deleted, 5 unchanged\n"
    assert snapshot(db) == before


def test_apply_dry_run_shows_diff_writes_nothing(seeded: Cli, db: str, tmp_path: Path) -> None:
    """--dry-run prints the diff of each change and leaves the store alone."""
    changed = tmp_path / "c.yaml"
    changed.write_text("guest: db\ncpu: {weight: 500}\n---\nguest: new\n")
    before = snapshot(db)
    result = seeded("apply", "-f", str(changed), "--dry-run", "--prune")
    assert result.exit_code == 0
    assert "--- db@1\n+++ db@2\n" in result.output
    assert "--- /dev/null\n+++ new@1\n" in result.output
    assert result.output.endswith(
        "dry run, nothing written: 1 created, 1 updated, 4 deleted, 0 unchanged\n"
    )
    assert snapshot(db) == before


def test_apply_prune_deletes_the_rest(seeded: Cli) -> None:
    """--prune deletes the policies of guests not in the files."""
    result = seeded("apply", "-f", "-", "--prune", input="guest: db\n")
    assert result.output.endswith("0 created, 1 updated, 4 deleted, 0 unchanged\n")
    assert [line.split()[0] for line in seeded("policy", "list").output.splitlines()[1:]] == ["db"]


def test_apply_directory_and_stdin(run: Cli, tmp_path: Path) -> None:
    """-f takes a directory of files and - for standard input."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.yaml").write_text("guest: a\n")
    (tmp_path / "d" / "b.json").write_text('{"guest": "b"}')
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    result = run("apply", "-f", str(tmp_path / "d"), "-f", "-", input="guest: c\n")
    assert result.output.endswith("3 created, 0 updated, 0 deleted, 0 unchanged\n")


def test_plan(seeded: Cli) -> None:
    """plan prints start and stop waves from the stored graph."""
    assert json.loads(seeded("plan", "start", "--all", "-o", "json").output) == {
        "waves": [["batch", "db"], ["api", "cache"], ["web"]]
    }
    assert json.loads(seeded("plan", "start", "api", "-o", "json").output) == {
        "waves": [["db"], ["api"]]
    }
    assert json.loads(seeded("plan", "stop", "db", "-o", "json").output) == {
        "waves": [["web"], ["api", "cache"], ["db"]]
    }
    table = seeded("plan", "start", "web").output.splitlines()
    assert table == ["WAVE   GUESTS", "1      db", "2      api cache", "3      web"]


def test_plan_usage(run: Cli) -> None:
    """plan needs guests or --all, not both."""
    assert run("plan", "start").exit_code == 2
    assert run("plan", "start", "a", "--all").exit_code == 2


# -- bad input: one line naming field and value, exit 2, store unchanged --------

BAD_SETS = [
    (["--vcpupin", "1:0-"], 'error: cpu.vcpupin[1]: "0-" is not a cpuset: range has no end (at 2)'),
    (
        ["--vcpus", "3-1"],
        'error: cpu.vcpus: "3-1" is not a cpuset: range 3-1 runs backwards (at 1)',
    ),
    (
        ["--emulatorpin", "0,,1"],
        "error: cpu.emulatorpin: \"0,,1\" is not a cpuset: expected a CPU number, found ',' (at 2)",
    ),
    (["--vcpupin", "x"], 'error: --vcpupin: "x" is not VCPU:CPUSET (e.g. 0:2-3)'),
    (["--weight", "0"], "error: cpu.weight: 0 is below the minimum 1"),
    (["--weight", "-3"], "error: cpu.weight: -3 is below the minimum 1"),
    (["--weight", "99999999"], "error: cpu.weight: 99999999 is above the maximum 10000"),
    (["--cap", "0"], "error: cpu.cap: 0 is below the minimum 1"),
    (["--cap", "-50"], "error: cpu.cap: -50 is below the minimum 1"),
    (["--cap", "999999999"], "error: cpu.cap: 999999999 is above the maximum 1638400"),
    (
        ["--requires", "db@http:db"],
        'error: requires[1].when: "http:db" is not a condition: unknown kind "http" (running, tcp:HOST:PORT, exec:COMMAND, agent)',
    ),
    (
        ["--requires", "db@tcp:db"],
        'error: requires[1].when: "tcp:db" is not a condition: tcp needs HOST:PORT',
    ),
    (
        ["--wants", "db@tcp:db:"],
        'error: wants[1].when: "tcp:db:" is not a condition: port "" is not 1-65535',
    ),
    (["--requires", "web"], 'error: requires[1].guest: "web" is the guest itself'),
    (["--requires", "@running"], 'error: --requires: "@running" is not GUEST[@WHEN]'),
    (["--label", "novalue"], 'Error: --label: "novalue" is not KEY=VALUE'),
    (
        ["--clear", "cpu.nope"],
        'error: "cpu.nope" is not a field to clear (e.g. cpu.weight, cpu.vcpupin.1, requires.db, labels.tier)',
    ),
    (["--stop-timeout", "0"], "error: stop.timeout: 0 is below the minimum 1"),
    (
        ["--memory-floor", "1024"],
        'error: memory.floor: "1024" is not a size: a number and a unit, K, M, G or T (e.g. 512M)',
    ),
    (
        ["--memory-soft-limit", "1GB"],
        'error: memory.soft_limit: "1GB" is not a size: a number and a unit, K, M, G or T '
        "(e.g. 512M)",
    ),
    (["--memory-floor", "70T"], 'error: memory.floor: "70T" is not between 1M and 64T'),
    (["--memory-balloon", "auto"], "error: memory.floor: is required with memory.balloon: auto"),
    (["--memory-weight", "0"], "error: memory.weight: 0 is below the minimum 1"),
    (["--memory-weight", "10001"], "error: memory.weight: 10001 is above the maximum 10000"),
]


@pytest.mark.parametrize(("args", "message"), BAD_SETS)
def test_bad_set_is_refused(seeded: Cli, db: str, args: list[str], message: str) -> None:
    """Each bad `policy set` is refused with one line and exit 2, changing nothing."""
    seeded("policy", "set", "web", "--requires", "api")
    before = snapshot(db)
    result = seeded("policy", "set", "web", *args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == message
    assert snapshot(db) == before


def test_cycle_via_set_is_refused(seeded: Cli, db: str) -> None:
    """A set that closes a cycle names it and changes nothing."""
    before = snapshot(db)
    result = seeded("policy", "set", "db", "--wants", "web")
    assert (result.exit_code, result.output) == (
        2,
        "error: dependency cycle: db -> web -> api -> db\n",
    )
    assert snapshot(db) == before


BAD_FILES = [
    (
        "cpuset.yaml",
        b"guest: a\n---\nguest: web\ncpu:\n  vcpupin: {1: '0-'}\n",
        'error: {d}/cpuset.yaml, document 2 (web): cpu.vcpupin[1]: "0-" is not a cpuset: range has no end (at 2)',
    ),
    (
        "weight.yaml",
        b"guest: web\ncpu: {weight: 0}\n",
        "error: {d}/weight.yaml, document 1 (web): cpu.weight: 0 is below the minimum 1",
    ),
    (
        "cap.json",
        b'{"guest": "web", "cpu": {"cap": 100000000000}}',
        "error: {d}/cap.json, document 1 (web): cpu.cap: 100000000000 is above the maximum 1638400",
    ),
    (
        "cond.yaml",
        b"guest: web\nrequires: [{guest: db, when: 'ping:db'}]\n",
        'error: {d}/cond.yaml, document 1 (web): requires[0].when: "ping:db" is not a condition: unknown kind "ping" (running, tcp:HOST:PORT, exec:COMMAND, agent)',
    ),
    (
        "tcp.yaml",
        b"guest: web\nrequires: [{guest: db, when: 'tcp:db'}]\n",
        'error: {d}/tcp.yaml, document 1 (web): requires[0].when: "tcp:db" is not a condition: tcp needs HOST:PORT',
    ),
    (
        "self.yaml",
        b"guest: web\nwants: [{guest: web}]\n",
        'error: {d}/self.yaml, document 1 (web): wants[0].guest: "web" is the guest itself',
    ),
    (
        "unknown.yaml",
        b"guest: web\ncpu: {weigth: 5}\n",
        "error: {d}/unknown.yaml, document 1 (web): cpu.weigth: unknown field",
    ),
    (
        "dup.yaml",
        b"guest: x\n---\nguest: web\n---\nguest: x\n",
        'error: guest "x" appears twice: {d}/dup.yaml, document 1 and {d}/dup.yaml, document 3',
    ),
    (
        "latin1.yaml",
        b"guest: web\nlabels: {owner: Jos\xe9}\n",
        "error: {d}/latin1.yaml: not UTF-8 text (byte 0xe9 at offset 30)",
    ),
    ("empty.yaml", b"", "error: {d}/empty.yaml: holds no policy documents"),
    (
        "huge.yaml",
        b"# " + b"x" * (10 * 1024 * 1024) + b"\nguest: web\n",
        "error: {d}/huge.yaml: 10485774 bytes is over the limit of 8 MiB for one policy file; split it into several files",
    ),
]


@pytest.mark.parametrize(("name", "data", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_is_refused(
    seeded: Cli, db: str, tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    """Each bad file is refused with one line and exit 2; nothing at all is written."""
    path = tmp_path / name
    path.write_bytes(data)
    good = tmp_path / "good.yaml"
    good.write_text("guest: fresh\n---\nguest: db\ncpu: {weight: 1}\n")
    before = snapshot(db)
    result = seeded("apply", "-f", str(good), "-f", str(path), "--prune")
    assert result.exit_code == 2
    assert result.output == message.format(d=tmp_path) + "\n"
    assert snapshot(db) == before


def test_cycle_across_files_is_refused(seeded: Cli, db: str, tmp_path: Path) -> None:
    """A cycle formed by documents in different files is refused whole."""
    (tmp_path / "a.yaml").write_text("guest: x\nrequires: [{guest: y}]\n")
    (tmp_path / "b.yaml").write_text("guest: y\nwants: [{guest: z}]\n")
    (tmp_path / "c.yaml").write_text(
        "guest: z\nrequires: [{guest: x}]\n---\nguest: db\ncpu: {cap: 5}\n"
    )
    before = snapshot(db)
    result = seeded("apply", *(f"-f{tmp_path / n}" for n in ("a.yaml", "b.yaml", "c.yaml")))
    assert (result.exit_code, result.output) == (2, "error: dependency cycle: x -> y -> z -> x\n")
    assert snapshot(db) == before


def test_missing_file_is_refused(seeded: Cli, db: str, tmp_path: Path) -> None:
    """A file that does not exist is named; nothing is written."""
    before = snapshot(db)
    result = seeded("apply", "-f", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert result.output == f"error: {tmp_path}/nope.yaml: cannot read: No such file or directory\n"
    assert snapshot(db) == before


def test_not_found_exits_1(run: Cli) -> None:
    """Reading a guest without a policy is an operation failure, exit 1."""
    result = run("policy", "get", "nope")
    assert (result.exit_code, result.output) == (1, "error: nope: no policy\n")
    run("policy", "set", "web")
    assert run("policy", "diff", "web", "7").output == "error: web: no revision 7\n"


def test_size_limit_is_checked_before_reading(tmp_path: Path) -> None:
    """The size limit used in the tests is the one the code enforces."""
    assert MAX_FILE_BYTES < 10 * 1024 * 1024


def test_plan_as_graphs(seeded: Cli) -> None:
    """plan -o dot and -o mermaid draw the planned guests with the critical path in red."""
    dot = seeded("plan", "start", "web", "-o", "dot").output
    assert dot.startswith("digraph plan {\n")
    assert '"web" -> "api";' in dot
    assert '"web" -> "cache" [style=dashed, color=red, penwidth=2];' in dot
    assert '"batch"' not in dot
    mermaid = seeded("plan", "start", "web", "-o", "mermaid").output.splitlines()
    assert mermaid[0] == "flowchart BT"
    assert mermaid[-1] == "  class n0,n2,n3 critical"


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=BODIES, dry_run=st.booleans())
def test_apply_any_document_is_applied_or_refused(
    tmp_path_factory: pytest.TempPathFactory, body: bytes, dry_run: bool
) -> None:
    """apply -f - with arbitrary JSON, YAML or bytes exits 0 or 2 with one error line, and a
    refusal changes nothing; never a traceback."""
    db = str(tmp_path_factory.mktemp("cli") / "p.db")
    run = Cli(db)
    assert run("policy", "set", "db", "--label", "tier=data").exit_code == 0
    before = snapshot(db)
    result = run("apply", "-f", "-", *(["--dry-run"] if dry_run else []), input=body)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert result.output.startswith("error: ") or "Usage:" in result.output
        assert snapshot(db) == before


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    option=st.sampled_from(
        [
            "--vcpupin",
            "--vcpus",
            "--emulatorpin",
            "--requires",
            "--wants",
            "--label",
            "--clear",
            "--weight",
            "--cap",
            "--if-revision",
        ]
    ),
    value=NASTY_TEXT,
)
def test_set_any_flag_value_is_applied_or_refused(
    tmp_path_factory: pytest.TempPathFactory, option: str, value: str
) -> None:
    """policy set with arbitrary text in any flag exits 0, 2 or 3, never a traceback; a
    refusal changes nothing."""
    db = str(tmp_path_factory.mktemp("cli") / "p.db")
    run = Cli(db)
    assert run("policy", "set", "web", "--weight", "100").exit_code == 0
    before = snapshot(db)
    result = run("policy", "set", "web", option, value)
    assert result.exit_code in (0, 2, 3), result.output
    if result.exit_code:
        assert snapshot(db) == before


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--vcpupin", "\u00b2:1"], "--vcpupin"),
        (["--requires", "db@tcp:db:\u00b2"], "port"),
    ],
)
def test_non_ascii_digits_are_refused(run: Cli, db: str, args: list[str], field: str) -> None:
    """Digits that str.isdigit() accepts and int() does not are a usage error naming the flag."""
    before = snapshot(db)
    result = run("policy", "set", "web", *args)
    assert result.exit_code == 2
    assert field in result.output
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["policy", "set", "\udcff", "--weight", "5"], 'argument 5 ("\ufffd") is not UTF-8 text'),
        (["policy", "set", "web", "--label", "k=\udcff"], "is not UTF-8 text"),
        (["policy", "set", "web", "--weight", "\u0663\u0660\u0660"], "not a whole number"),
        (["policy", "set", "web", "--weight", "1_000"], "not a whole number"),
        (["policy", "set", "web", "--cap", " 7 "], "not a whole number"),
        (["policy", "history", "web\udcff"], "is not UTF-8 text"),
    ],
)
def test_arguments_that_are_not_text_or_digits_are_usage_errors(
    run: Cli, db: str, args: list[str], shown: str
) -> None:
    """An argument that was not UTF-8 (a traceback from the store's encoder) and
    numbers in other digits or with '_' (accepted, as int() reads them) are
    usage errors naming them; nothing is written, with --db or --server."""
    run("policy", "set", "web", "--weight", "100")
    before = snapshot(db)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert shown in result.output
    assert snapshot(db) == before
    remote = CliRunner().invoke(cli, ["--server", "/nonexistent.sock", *args])
    assert remote.exit_code == 2, remote.output
    assert shown in remote.output


def test_apply_from_a_file_that_never_ends(run: Cli, db: str) -> None:
    """apply -f /dev/zero (its size says 0) stops reading at the limit and is
    refused; it read without end."""
    before = snapshot(db)
    result = run("apply", "-f", "/dev/zero")
    assert result.exit_code == 2
    assert "over the limit of 8 MiB" in result.output
    assert snapshot(db) == before


def test_a_broken_stored_policy_through_the_cli(run: Cli, store: SqlStore, tmp_path: Path) -> None:
    """With a stored policy that no longer loads: get fails in one line, list and
    export name it on stderr (export exits 1: its output is not the whole store),
    apply -f replaces it and delete removes it."""
    run("policy", "set", "x2", "--weight", "5")
    run("policy", "set", "web", "--weight", "7")
    break_policy(store, "x2", BROKEN_DOC)
    r = run("policy", "get", "x2")
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1
    assert "x2: the stored policy (revision 1) no longer loads" in r.stderr
    r = run("policy", "list")
    assert (r.exit_code, "web" in r.stdout) == (0, True)
    assert "warning: x2: the stored policy (revision 1) no longer loads" in r.stderr
    r = run("export")
    assert r.exit_code == 1
    assert "guest: web" in r.stdout
    assert "x2" not in r.stdout
    fixed = tmp_path / "x2.yaml"
    fixed.write_text("guest: x2\ncpu:\n  weight: 9\n")
    assert run("apply", "-f", str(fixed)).exit_code == 0
    assert "weight: 9" in run("policy", "get", "x2").stdout
    break_policy(store, "x2", BROKEN_DOC)
    assert run("policy", "delete", "x2").exit_code == 0
    assert run("export").exit_code == 0


#: How `policy set` sets each field of the model (with what it needs beside it).
FIELD_ARGS: dict[str, list[str]] = {
    "cpu.vcpupin": ["--vcpupin", "0:1"],
    "cpu.vcpus": ["--vcpus", "0-1"],
    "cpu.allowed": ["--vcpus", "auto", "--allowed", "0-3"],
    "cpu.emulatorpin": ["--emulatorpin", "0"],
    "cpu.weight": ["--weight", "200"],
    "cpu.cap": ["--cap", "150"],
    "cpu.placement": ["--placement", "dedicated"],
    "cpu.threads": ["--placement", "dedicated", "--threads", "isolate"],
    "cpu.emulator": ["--placement", "dedicated", "--emulator", "isolate"],
    "cpu.topology": ["--placement", "dedicated", "--topology", "match"],
    "numa.nodes": ["--numa-nodes", "2"],
    "numa.memory": ["--numa-nodes", "2", "--numa-memory", "strict"],
    "memory.balloon": ["--memory-balloon", "auto", "--memory-floor", "1G"],
    "memory.floor": ["--memory-floor", "1G"],
    "memory.weight": ["--memory-weight", "200"],
    "memory.free_page_reporting": ["--free-page-reporting"],
    "memory.soft_limit": ["--memory-soft-limit", "1536M"],
    "requires": ["--requires", "db@tcp:db:5432"],
    "wants": ["--wants", "db"],
    "start.autostart": ["--autostart"],
    "start.delay": ["--start-delay", "5"],
    "stop.timeout": ["--stop-timeout", "60"],
    "stop.action": ["--stop-action", "destroy"],
    "stop.escalate": ["--stop-escalate"],
    "stop.on_dependency_stop": ["--on-dependency-stop", "stop"],
    "labels": ["--label", "tier=data"],
}


def _field(doc: dict[str, object], path: str) -> object:
    value: object = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def test_policy_set_has_an_option_for_every_field_of_the_model() -> None:
    """Every field a policy has (read from the model) can be given to `policy set`:
    the placement fields had no option at all."""
    from tests.strategies import field_paths  # noqa: PLC0415
    from virtpolicy.cli.commands import policy_set  # noqa: PLC0415
    from virtpolicy.policy.model import GuestPolicy  # noqa: PLC0415

    assert set(FIELD_ARGS) == set(field_paths(GuestPolicy)) - {"guest"}
    options = {o for p in policy_set.params for o in (*p.opts, *p.secondary_opts)}
    given = {a for args in FIELD_ARGS.values() for a in args if a.startswith("--")}
    assert given <= options
    help_text = CliRunner().invoke(cli, ["policy", "set", "--help"]).output
    assert all(o in help_text for o in given)


@pytest.mark.parametrize("path", sorted(FIELD_ARGS))
def test_every_field_can_be_set_and_cleared(run: Cli, db: str, path: str) -> None:
    """Each field set through `policy set`, then cleared with --clear (cpu.placement,
    cpu.threads and the numa fields were refused). A refusal changes nothing."""
    assert run("policy", "set", "db").exit_code == 0
    set_ = run("policy", "set", "web", *FIELD_ARGS[path])
    assert set_.exit_code == 0, set_.output
    doc = json.loads(run("policy", "get", "web", "-o", "json").stdout)
    assert _field(doc, path) not in (None, [], {}), doc
    before = snapshot(db)
    assert run("policy", "set", "web", "--clear", path + "x").exit_code == 2
    assert snapshot(db) == before
    cleared = run("policy", "set", "web", "--clear", path)
    assert cleared.exit_code == 0, cleared.output
    doc = json.loads(run("policy", "get", "web", "-o", "json").stdout)
    assert _field(doc, path) in (None, [], {}), doc


def test_policy_set_choices_are_the_models() -> None:
    """Each option of `policy set` that offers choices offers exactly the values
    the model takes (written out in the command, which must not import the model
    to start up)."""
    import typing  # noqa: PLC0415

    import click  # noqa: PLC0415

    from virtpolicy.cli.commands import policy_set  # noqa: PLC0415
    from virtpolicy.policy.model import GuestPolicy  # noqa: PLC0415

    def literal(path: str) -> set[object]:
        model: typing.Any = GuestPolicy
        *sections, name = path.split(".")
        for section in sections:
            model = model.model_fields[section].annotation
        annotation = model.model_fields[name].annotation
        found = set()
        for arg in (annotation, *typing.get_args(annotation)):
            if typing.get_origin(arg) is typing.Literal:
                found |= set(typing.get_args(arg))
        return found

    checked = 0
    for param in policy_set.params:
        if isinstance(param.type, click.Choice):
            flag = param.opts[0]
            path = next(p for p, args in FIELD_ARGS.items() if flag in args)
            assert set(param.type.choices) == literal(path), flag
            checked += 1
    # stop.action, stop.on_dependency_stop, cpu.placement, threads, emulator,
    # topology, numa.memory, memory.balloon
    assert checked == 8
