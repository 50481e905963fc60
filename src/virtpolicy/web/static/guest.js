// A guest's page: its status, policy, dependencies, history and editor.

import { renderEditor } from "./editor.js";
import { body, headers, api, getJson, el, svg, table, fill, showError, mayWrite, guestLink, stateBadge, driftText, follow, debounced, kib, decisionWhat, actionButton, when } from "./common.js";
import { migrateButton } from "./migrate.js";

export async function guestPage() {
  const guest = body.dataset.guest;
  const path = encodeURIComponent(guest);

  async function renderStatus() {
    let status;
    try {
      status = await getJson(`/v1/guests/${path}/status`);
    } catch (error) {
      if (error.status === 404) { fill("status", el("p", {}, error.message)); return; }
      throw error;
    }
    const desired = status.desired || {}, actual = status.actual || {};
    const rows = [];
    const vcpus = new Set([...Object.keys(desired.vcpupin || {}), ...Object.keys(actual.vcpupin || {})]);
    for (const v of [...vcpus].sort((a, b) => a - b)) {
      rows.push([`vCPU ${v}`, desired.vcpupin?.[v] ?? "—", actual.vcpupin?.[v] ?? "—"]);
    }
    rows.push(["emulator", desired.emulatorpin ?? "—", actual.emulatorpin ?? "—"]);
    for (const key of Object.keys(desired.sched || {})) { // the managed ones
      rows.push([key, desired.sched?.[key] ?? "—", actual.sched?.[key] ?? "—"]);
    }
    if (desired.numatune || actual.numatune) rows.push(["numatune", desired.numatune ?? "—", actual.numatune ?? "—"]);
    if (desired.topology || actual.topology) rows.push(["topology", desired.topology ?? "—", actual.topology ?? "—"]);
    const drift = driftText(status.drift);
    fill("status",
      el("p", {}, "On ", el("strong", {}, status.host || "no host"), ", ", stateBadge(status.state),
        status.checked_at ? [", checked ", when(status.checked_at)] : ""),
      el("p", { id: "drift", class: drift ? "drift" : "ok" }, drift ? `Drift: ${drift}` : "No drift."),
      table(["", "Desired", "Actual"], rows, "Tuning"),
      (status.problems || []).length
        ? el("ul", { class: "problems", "aria-label": "Problems" }, status.problems.map((p) => el("li", {}, p)))
        : null,
      status.error ? el("p", { class: "error-text" }, status.error) : null,
      (status.notices || []).length
        ? el("ul", { "aria-label": "Notices" }, status.notices.map((n) => el("li", {}, n)))
        : null,
    );
  }

  let editing = false; // while the form holds unsaved changes, it is not redrawn
  const openEditor = (stored) => renderEditor(stored, {
    guest, path,
    editing: (on) => { editing = on; },
    reload: () => renderPolicy(),
  });

  async function renderPolicy() {
    let stored, yaml;
    try {
      stored = await getJson(`/v1/policies/${path}`);
      yaml = await (await api(`/v1/policies/${path}`, { headers: { Accept: "application/yaml" } })).text();
    } catch (error) {
      if (error.status === 404) {
        fill("policy", el("p", {}, "It has no policy: the daemon leaves it as libvirt has it."),
          mayWrite() && !editing
            ? el("button", { type: "button", id: "create-policy", onclick: () => { editing = true; openEditor({ revision: 0, policy: {} }); } }, "Create a policy")
            : null);
        fill("deps", el("p", {}, "It depends on no guest."));
        fill("history", el("p", {}, "No revision yet."));
        return;
      }
      throw error;
    }
    fill("policy", el("p", {}, `Revision ${stored.revision}`), el("pre", { class: "yaml" }, yaml));
    if (mayWrite() && !editing) openEditor(stored);
    const [dependents, history, graph] = await Promise.all([
      getJson(`/v1/guests/${path}/dependents`),
      getJson(`/v1/policies/${path}/history`),
      getJson(`/v1/graph?guest=${path}`),
    ]);
    const policy = stored.policy || {};
    const nodes = new Map(graph.nodes.map((n) => [n.guest, n]));
    const now = (g) => {
      const n = nodes.get(g);
      return n ? `${n.state || "undefined"}${n.host ? ` on ${n.host}` : ""}` : "unknown";
    };
    const edges = [];
    for (const [kind, list] of [["requires", policy.requires], ["wants", policy.wants]]) {
      for (const dep of list || []) edges.push([kind, guestLink(dep.guest), dep.when || "running", now(dep.guest)]);
    }
    const blocked = nodes.get(guest)?.blocked;
    fill("deps",
      edges.length ? table(["", "Guest", "Condition", "Now"], edges, "It depends on") : el("p", {}, "It depends on no guest."),
      blocked ? el("p", { class: "error-text", id: "blocked-by" }, `Held back: ${blocked}`) : null,
      dependents.dependents.length
        ? el("p", {}, "Depend on it: ", dependents.dependents.flatMap((g, i) => (i ? [", ", guestLink(g)] : [guestLink(g)])))
        : el("p", {}, "No guest depends on it."),
    );
    fill("history", table(["Revision", "Time", "Actor", "Change"],
      history.slice().reverse().map((h) => [h.revision, when(h.time), h.actor, h.change])));
  }

  // Per-vCPU CPU and steal over the last hour: the history once, then each
  // sample from the event stream.
  const HOUR = 3600;
  let points = [];
  function renderCharts() {
    const now = Date.now() / 1000;
    points = points.filter((p) => p.time > now - HOUR);
    const vcpus = Object.keys(points.at(-1) || {}).filter((k) => k.startsWith("vcpu.")).length;
    if (!points.length || !vcpus) {
      fill("charts", el("p", {}, "No statistics yet (the daemon samples running guests)."));
      return;
    }
    const Wc = 600, Hc = 90;
    const line = (key) => points
      .filter((p) => p[key] !== null && p[key] !== undefined)
      .map((p) => `${(((p.time - (now - HOUR)) / HOUR) * Wc).toFixed(1)},${(Hc - (Math.min(100, p[key]) / 100) * Hc).toFixed(1)}`)
      .join(" ");
    const last = points.at(-1);
    // Memory: the balloon (what it has) and what it could still use, against
    // the most it had over the hour.
    const top = Math.max(1, ...points.map((p) => p.memory_kib || 0));
    const memLine = (key) => points
      .filter((p) => p[key] !== null && p[key] !== undefined)
      .map((p) => `${(((p.time - (now - HOUR)) / HOUR) * Wc).toFixed(1)},${(Hc - (p[key] / top) * Hc).toFixed(1)}`)
      .join(" ");
    const memory = points.some((p) => p.memory_kib != null) ? el("figure", { class: "chart", id: "memory-chart" },
      svg("svg", { viewBox: `0 0 ${Wc} ${Hc}`, class: "chart", role: "img", "aria-label": "Memory: balloon and usable, last hour" },
        svg("polyline", { points: memLine("memory_kib"), class: "cpu" }),
        svg("polyline", { points: memLine("usable_kib"), class: "steal" })),
      el("figcaption", {}, `Memory: balloon ${kib(last.memory_kib)}, usable ${kib(last.usable_kib)} now (last hour; solid: balloon, dashed: usable; 0-${kib(top)})`)) : null;
    fill("charts", memory, [...Array(vcpus).keys()].map((v) => el("figure", { class: "chart" },
      svg("svg", { viewBox: `0 0 ${Wc} ${Hc}`, class: "chart", role: "img", "aria-label": `vCPU ${v}: CPU and steal, last hour` },
        svg("line", { x1: 0, y1: Hc / 2, x2: Wc, y2: Hc / 2, class: "grid" }),
        svg("polyline", { points: line(`vcpu.${v}`), class: "cpu" }),
        svg("polyline", { points: line(`steal.${v}`), class: "steal" })),
      el("figcaption", {}, `vCPU ${v}: ${last[`vcpu.${v}`] ?? "—"} % CPU, ${last[`steal.${v}`] ?? "—"} % steal now (last hour; 0-100 % of one host CPU)`))));
  }
  async function loadCharts() {
    let latest = null;
    try {
      const history = await getJson(`/v1/stats/guests/${path}?since=${Date.now() / 1000 - HOUR}`);
      points = history.points;
      latest = history.latest;
    } catch (error) {
      if (error.status !== 404) throw error;
    }
    renderCharts();
    renderMemory(latest);
  }

  // Its memory now: defined, the balloon, what the guest itself says (through
  // its balloon driver) and what its process holds on the host.
  function renderMemory(m) {
    if (!m || !m.running) {
      fill("memory", el("p", {}, "No memory figures (the daemon samples running guests)."));
      return;
    }
    const rate = (v, unit) => (v === null || v === undefined ? "—" : `${v} ${unit}`);
    fill("memory", table(["", "Now"], [
      ["Defined", kib(m.memory_max_kib)],
      ["Balloon (what it has)", kib(m.memory_kib)],
      ["Usable in the guest", kib(m.memory_usable_kib ?? m.memory_unused_kib)],
      ["Swapped in", rate(m.memory_guest_swap_in_kib_per_second, "KiB/s")],
      ["Major faults", rate(m.memory_guest_major_faults_per_second, "/s")],
      ["Resident on the host", kib(m.rss_kib)],
    ], "Memory"));
  }

  async function renderDecisions() {
    const decisions = await getJson(`/v1/decisions?guest=${path}&limit=20`);
    fill("guest-decisions", decisions.length
      ? table(["Time", "Tuner", "What", "Outcome", "Why"], decisions.map((d) =>
          [when(d.time), d.tuner, decisionWhat(d), d.outcome, d.reason]))
      : el("p", {}, "No tuner has touched it."));
  }

  // Why it is not as its policy says, most severe first (the engine's order).
  async function renderWhy() {
    const graph = await getJson(`/v1/graph?guest=${path}`);
    const node = graph.nodes.find((n) => n.guest === guest);
    const why = node?.why || [];
    fill("guest-actions", actionButton(guest, node?.state, "action"),
      await migrateButton(guest, node?.state, node?.host, "action"));
    fill("why", why.length
      ? el("ul", { class: "why-list", "aria-label": "Why" }, why.map((w) => el("li", { class: `why why-${w.severity}` }, `${w.severity}: ${w.text}`)))
      : el("p", { class: "ok" }, "As its policy says."));
  }

  await Promise.all([renderWhy(), renderStatus(), renderPolicy(), loadCharts(), renderDecisions()]);
  const charts = debounced(renderCharts, 1000);
  const decided = debounced(() => renderDecisions().catch(showError), 1000);
  follow(["stats", "decision"], (kind, data) => {
    if (kind === "decision") {
      if (data.guest === guest) decided();
      return;
    }
    const mine = (data.guests || []).find((g) => g.guest === guest);
    if (!mine) return;
    renderMemory(mine);
    const point = { time: Date.now() / 1000, memory_kib: mine.memory_kib, usable_kib: mine.memory_usable_kib };
    for (const v of mine.vcpus || []) {
      point[`vcpu.${v.vcpu}`] = v.percent;
      point[`steal.${v.vcpu}`] = v.steal_percent;
    }
    points.push(point);
    charts();
  });
  const status = debounced(() => Promise.all([renderWhy(), renderStatus()]).then(() => showError(null), showError), 300);
  const policy = debounced(() => renderPolicy().catch(showError), 300);
  const repaired = [];
  follow(["lifecycle", "policy", "enforcement"], (kind, data) => {
    if (data.guest !== undefined && data.guest !== null && data.guest !== guest) return;
    if (kind === "policy") policy();
    if (kind === "enforcement") {
      // Drift the daemon found, and put back: what it was, what it is again.
      const when = new Date().toLocaleTimeString();
      for (const [what, change] of Object.entries(data.applied || {})) {
        repaired.unshift(`${when} ${what}: found ${change.from}, put back to ${change.to}`);
      }
      fill("repairs", el("ul", { "aria-label": "Drift put back" }, repaired.slice(0, 20).map((r) => el("li", {}, r))));
    }
    status();
  });
}
