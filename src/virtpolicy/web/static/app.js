// virtpolicy's web page: asks the API for everything, renders it, follows the
// event stream. No framework and nothing from the internet. Text reaches the
// page only through textContent (el() below), never as HTML.

const body = document.body;
const page = body.dataset.page;
const TOKEN_KEY = "virtpolicy.token"; // sessionStorage: this tab only
const PAGE_SIZE = 100;

class Unauthorized extends Error {}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

function headers(extra = {}) {
  const h = new Headers(extra);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h.set("Authorization", `Bearer ${token}`);
  if (!h.has("Accept")) h.set("Accept", "application/json");
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) {
    throw new ApiError(response.status, await response.json().catch(() => null));
  }
  return response;
}

const getJson = async (path) => (await api(path)).json();

// An element with attributes (on*: listeners) and children (strings become text).
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headings, rows, caption) {
  return el(
    "table",
    {},
    caption ? el("caption", {}, caption) : null,
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))),
  );
}

function fill(id, ...children) {
  const target = document.getElementById(id);
  const shown = children.flat().filter((c) => c !== null && c !== undefined && c !== false);
  if (target) target.replaceChildren(...shown);
}

function showError(error) {
  const box = document.getElementById("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

function askForToken() {
  document.getElementById("content").hidden = true;
  const form = document.getElementById("token-form");
  form.hidden = false;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, form.elements.token.value.trim());
    location.reload();
  });
  form.elements.token.focus();
}

// Writes are offered to an operator or admin, never on the read-only socket.
const mayWrite = () => ["operator", "admin"].includes(body.dataset.role) && body.dataset.listener !== "unix-ro";

const guestLink = (name) => el("a", { href: `/guests/${encodeURIComponent(name)}` }, name);
const stateBadge = (state) =>
  el("span", { class: `state state-${String(state || "unknown").replace(/\s+/g, "-")}` }, state || "unknown");

function driftText(drift) {
  const keys = Object.keys(drift || {});
  return keys.length ? keys.map((k) => `${k}: ${drift[k].actual} → ${drift[k].desired}`).join("; ") : "";
}

// -- the event stream -----------------------------------------------------------

// /v1/events through fetch (EventSource cannot send the token): each event's
// kind and data to onEvent; reconnects after a drop, from the last id seen.
async function follow(kinds, onEvent) {
  let last = null;
  for (;;) {
    try {
      const query = kinds.map((k) => `kind=${encodeURIComponent(k)}`).join("&");
      const extra = last === null ? {} : { "Last-Event-ID": last };
      const response = await api(`/v1/events?${query}`, { headers: { ...extra, Accept: "text/event-stream" } });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = {};
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const at = line.indexOf(":");
            if (at > 0) fields[line.slice(0, at)] = line.slice(at + 1).trimStart();
          }
          if (fields.id) last = fields.id;
          if (fields.event && fields.data) onEvent(fields.event, JSON.parse(fields.data));
        }
      }
    } catch (error) {
      if (error instanceof Unauthorized) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// Run refresh() now, and again at most every `wait` ms while `trigger` is called.
function debounced(refresh, wait = 500) {
  let timer = null;
  return () => {
    if (timer === null) timer = setTimeout(() => { timer = null; refresh(); }, wait);
  };
}

// -- pages ------------------------------------------------------------------------

const pages = {};

pages.fleet = async () => {
  const form = document.getElementById("filters");
  const params = new URLSearchParams(location.search);
  for (const name of ["q", "host", "state", "label"]) form.elements[name].value = params.get(name) || "";
  form.elements.problems.checked = params.get("problems") === "true";

  async function render() {
    const query = new URLSearchParams(location.search);
    const offset = Number(query.get("offset") || 0);
    query.set("limit", PAGE_SIZE);
    const [hosts, guests] = await Promise.all([
      getJson("/v1/hosts"),
      getJson(`/v1/fleet/guests?${query}`),
    ]);
    fill("hosts", hosts.length
      ? table(["Host", "State", "Guests", "Running", "Heartbeat"],
          hosts.map((h) => [h.name, stateBadge(h.state), h.guests, h.running, `${h.heartbeat_age_s} s ago`]))
      : el("p", {}, "No host has joined yet."));
    const first = guests.total ? offset + 1 : 0;
    fill("count", `${guests.total} guests${guests.total ? `; ${first}–${offset + guests.guests.length} shown` : ""}`);
    fill("guests", table(
      ["Guest", "Host", "State", "Revision", "Drift", "Problems", "Labels"],
      guests.guests.map((g) => [
        guestLink(g.guest),
        g.host || "—",
        stateBadge(g.state),
        g.policy_revision ?? "—",
        driftText(g.drift),
        [...(g.problems || []), ...(g.error ? [g.error] : [])].join("; "),
        Object.entries(g.labels || {}).map(([k, v]) => `${k}=${v}`).join(" "),
      ]),
    ));
    const pager = [];
    const go = (to) => {
      const next = new URLSearchParams(location.search);
      next.set("offset", to);
      history.replaceState(null, "", `?${next}`);
      render().catch(showError);
    };
    if (offset > 0) pager.push(el("button", { type: "button", onclick: () => go(Math.max(0, offset - PAGE_SIZE)) }, "Previous"));
    if (offset + PAGE_SIZE < guests.total) pager.push(el("button", { type: "button", onclick: () => go(offset + PAGE_SIZE) }, "Next"));
    fill("pager", pager);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const name of ["q", "host", "state", "label"]) {
      const value = form.elements[name].value.trim();
      if (value) next.set(name, value);
    }
    if (form.elements.problems.checked) next.set("problems", "true");
    history.replaceState(null, "", next.toString() ? `?${next}` : location.pathname);
    render().catch(showError);
  });
  await render();
  performance.mark("vp-fleet-rendered"); // what bench/bench_web.py times
  const again = debounced(() => render().then(() => showError(null), showError));
  follow(["lifecycle", "policy", "enforcement", "host"], again);
};

pages.guest = async () => {
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
        status.checked_at ? `, checked ${status.checked_at}` : ""),
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

  function renderEditor(stored) {
    const policy = stored.policy || {};
    const value = (path) => path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), policy);
    const labels = Object.entries(policy.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ");
    const field = (path, label, input) => {
      const id = `f-${path.replace(/\./g, "-")}`;
      const error = el("span", { class: "field-error", id: `${id}-error`, role: "alert" });
      input.id = id;
      input.dataset.field = path;
      input.setAttribute("aria-describedby", `${id}-error`);
      return el("div", { class: "field" }, el("label", { for: id }, label), input, error);
    };
    const text = (path, kind = "text") => {
      const v = value(path);
      return el("input", { type: kind, name: path, value: v == null ? "" : v });
    };
    const placement = el("select", { name: "cpu.placement" },
      ["shared", "dedicated"].map((o) => el("option", { value: o, selected: (value("cpu.placement") || "shared") === o }, o)));
    const autostart = el("input", { type: "checkbox", name: "start.autostart", checked: value("start.autostart") === true });
    const form = el("form", { id: "editor", class: "editor", novalidate: true },
      el("h3", {}, `Edit (revision ${stored.revision})`),
      field("cpu.weight", "CPU weight (1-10000)", text("cpu.weight", "number")),
      field("cpu.cap", "CPU cap (% of one host CPU)", text("cpu.cap", "number")),
      field("cpu.vcpus", "vCPUs on host CPUs (cpuset, or auto)", text("cpu.vcpus")),
      field("cpu.emulatorpin", "Emulator on host CPUs (cpuset)", text("cpu.emulatorpin")),
      field("cpu.placement", "Placement", placement),
      field("numa.nodes", "Within NUMA nodes", text("numa.nodes", "number")),
      field("start.autostart", "Start with the daemon", autostart),
      field("labels", "Labels (key=value, space between)", el("input", { type: "text", name: "labels", value: labels })),
      el("div", { class: "actions" }, el("button", { type: "submit" }, "Save"),
        el("button", { type: "button", onclick: () => { editing = false; renderPolicy().catch(showError); } }, "Discard")),
      el("div", { id: "conflict", role: "alert" }),
    );
    form.addEventListener("input", () => { editing = true; });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      for (const span of form.querySelectorAll(".field-error")) span.textContent = "";
      for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
      fill("conflict");
      const patch = {};
      const set = (path, v) => {
        const keys = path.split(".");
        let o = patch;
        for (const k of keys.slice(0, -1)) o = o[k] ??= {};
        o[keys.at(-1)] = v;
      };
      for (const input of form.querySelectorAll("[data-field]")) {
        const path = input.dataset.field;
        if (path === "labels") continue;
        let now;
        if (input.type === "checkbox") now = input.checked ? true : null;
        else if (input.value.trim() === "") now = null;
        else now = input.type === "number" ? Number(input.value) : input.value.trim();
        if (path === "cpu.placement" && now === "shared") now = null;
        const before = value(path) ?? null;
        if (now !== before) set(path, now);
      }
      const wanted = {};
      for (const pair of form.elements.labels.value.split(/\s+/).filter(Boolean)) {
        const at = pair.indexOf("=");
        wanted[at < 0 ? pair : pair.slice(0, at)] = at < 0 ? "" : pair.slice(at + 1);
      }
      const had = policy.labels || {};
      const labelPatch = {};
      for (const k of Object.keys(had)) if (!(k in wanted)) labelPatch[k] = null;
      for (const [k, v] of Object.entries(wanted)) if (had[k] !== v) labelPatch[k] = v;
      if (Object.keys(labelPatch).length) patch.labels = labelPatch;
      try {
        await api(`/v1/policies/${path}`, {
          method: "PATCH",
          headers: { "Content-Type": "application/json", "If-Match": `"${stored.revision}"` },
          body: JSON.stringify(patch),
        });
        editing = false;
        await renderPolicy();
      } catch (error) {
        if (error.status === 412) return showConflict(stored.revision);
        const name = error.detail?.error?.field;
        const input = name && form.querySelector(`[data-field="${CSS.escape(name.split(".").slice(0, 2).join("."))}"]`);
        if (input) {
          input.setAttribute("aria-invalid", "true");
          document.getElementById(`${input.id}-error`).textContent = error.message;
          input.focus();
        } else {
          showError(error);
        }
      }
    });
    fill("edit", form);
  }

  // The policy moved on since the form was opened: who changed what, and nothing saved.
  async function showConflict(opened) {
    const history = await getJson(`/v1/policies/${path}/history`);
    const since = history.filter((h) => h.revision > opened);
    const last = since.at(-1) || history.at(-1);
    fill("conflict",
      el("p", { class: "error-text" },
        `Not saved: changed by ${last.actor} at ${last.time} since you opened it (revision ${opened} → ${last.revision}).`),
      el("ul", { class: "diff", "aria-label": "What changed" }, since.map((h) => el("li", {}, `${h.revision}: ${h.change}`))),
      el("p", {}, "Discard to start again from the current policy."));
  }

  async function renderPolicy() {
    let stored, yaml;
    try {
      stored = await getJson(`/v1/policies/${path}`);
      yaml = await (await api(`/v1/policies/${path}`, { headers: { Accept: "application/yaml" } })).text();
    } catch (error) {
      if (error.status === 404) { fill("policy", el("p", {}, error.message)); fill("deps"); fill("history"); return; }
      throw error;
    }
    fill("policy", el("p", {}, `Revision ${stored.revision}`), el("pre", { class: "yaml" }, yaml));
    if (mayWrite() && !editing) renderEditor(stored);
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
      history.slice().reverse().map((h) => [h.revision, h.time, h.actor, h.change])));
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
    fill("charts", [...Array(vcpus).keys()].map((v) => el("figure", { class: "chart" },
      svg("svg", { viewBox: `0 0 ${Wc} ${Hc}`, class: "chart", role: "img", "aria-label": `vCPU ${v}: CPU and steal, last hour` },
        svg("line", { x1: 0, y1: Hc / 2, x2: Wc, y2: Hc / 2, class: "grid" }),
        svg("polyline", { points: line(`vcpu.${v}`), class: "cpu" }),
        svg("polyline", { points: line(`steal.${v}`), class: "steal" })),
      el("figcaption", {}, `vCPU ${v}: ${last[`vcpu.${v}`] ?? "—"} % CPU, ${last[`steal.${v}`] ?? "—"} % steal now (last hour; 0-100 % of one host CPU)`))));
  }
  async function loadCharts() {
    try {
      const history = await getJson(`/v1/stats/guests/${path}?since=${Date.now() / 1000 - HOUR}`);
      points = history.points;
    } catch (error) {
      if (error.status !== 404) throw error;
    }
    renderCharts();
  }

  async function renderDecisions() {
    const decisions = await getJson(`/v1/decisions?guest=${path}&limit=20`);
    fill("guest-decisions", decisions.length
      ? table(["Time", "Tuner", "What", "Outcome", "Why"], decisions.map((d) =>
          [d.time, d.tuner, `${d.kind}${d.vcpu == null ? "" : `.${d.vcpu}`}=${d.value}`, d.outcome, d.reason]))
      : el("p", {}, "No tuner has touched it."));
  }

  await Promise.all([renderStatus(), renderPolicy(), loadCharts(), renderDecisions()]);
  const charts = debounced(renderCharts, 1000);
  const decided = debounced(() => renderDecisions().catch(showError), 1000);
  follow(["stats", "decision"], (kind, data) => {
    if (kind === "decision") {
      if (data.guest === guest) decided();
      return;
    }
    const mine = (data.guests || []).find((g) => g.guest === guest);
    if (!mine) return;
    const point = { time: Date.now() / 1000 };
    for (const v of mine.vcpus || []) {
      point[`vcpu.${v.vcpu}`] = v.percent;
      point[`steal.${v.vcpu}`] = v.steal_percent;
    }
    points.push(point);
    charts();
  });
  const status = debounced(() => renderStatus().then(() => showError(null), showError), 300);
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
};

pages.cpus = async () => {
  async function render() {
    const [placement, host] = await Promise.all([getJson("/v1/placement"), getJson("/v1/stats/host")]);
    const busy = new Map(host.cpus.map((c) => [c.cpu, c.busy_percent]));
    const nodes = new Map();
    for (const row of placement.cpus) {
      if (!nodes.has(row.node)) nodes.set(row.node, new Map());
      const cores = nodes.get(row.node);
      if (!cores.has(row.core)) cores.set(row.core, []);
      cores.get(row.core).push(row);
    }
    // What a new dedicated guest could have here: CPUs neither dedicated nor
    // reserved (the placer leaves one of the host's shared), and whole cores.
    const open = (t) => !/vCPU|emulator|kept idle/.test(t.use) && t.use !== "reserved";
    const room = (cores) => {
      const threads = [...cores.values()].flat().filter(open).length;
      const whole = [...cores.values()].filter((ts) => ts.every(open)).length;
      return `For a new dedicated guest: ${threads} CPUs, ${whole} whole cores.`;
    };
    const shade = (pct) => (pct === null || pct === undefined ? "unknown" : `b${Math.min(10, Math.round(pct / 10))}`);
    fill("cpus",
      el("p", {}, placement.in_play
        ? `Placement is in play${placement.reserved ? `; CPUs ${placement.reserved} are reserved for the host` : ""}.`
        : "Placement is not in play: no guest here asks for dedicated CPUs or NUMA nodes."),
      [...nodes].map(([node, cores]) => el("section", { class: "node", "aria-label": `NUMA node ${node}` },
        el("h2", {}, `Node ${node}`),
        el("p", { class: "room" }, room(cores)),
        el("div", { class: "cores" }, [...cores].map(([core, threads]) => el("div", { class: "core", "aria-label": `core ${core}` },
          threads.map((t) => el("div", {
            class: `cpu ${shade(busy.get(t.cpu))} ${/vCPU|emulator|kept idle/.test(t.use) ? "dedicated" : t.use === "reserved" ? "reserved" : "shared"}`,
            "data-cpu": t.cpu,
            title: `CPU ${t.cpu}: ${t.use}`,
          }, el("span", { class: "id" }, `CPU ${t.cpu}`),
             el("span", { class: "busy" }, busy.get(t.cpu) == null ? "—" : `${Math.round(busy.get(t.cpu))} %`),
             el("span", { class: "use" }, t.use)))))))),
      Object.keys(placement.refused).length
        ? el("ul", { class: "problems", "aria-label": "Refused" }, Object.values(placement.refused).map((r) => el("li", {}, r)))
        : null,
    );
  }
  await render();
  setInterval(() => render().then(() => showError(null), showError), 5000);
};

pages.activity = async () => {
  async function render() {
    const [jobs, decisions] = await Promise.all([getJson("/v1/jobs"), getJson("/v1/decisions?limit=100")]);
    fill("jobs", table(["Job", "Action", "State", "Actor", "Guests"],
      jobs.map((j) => [j.id, j.action, j.state, j.actor, (j.guests || []).join(", ")])));
    const list = Array.isArray(decisions) ? decisions : decisions.decisions || [];
    fill("decisions", table(["Time", "Tuner", "Guest", "What", "Outcome", "Why"],
      list.map((d) => [d.time, d.tuner, d.guest, `${d.kind}${d.vcpu == null ? "" : `.${d.vcpu}`}=${d.value}`, d.outcome, d.reason])));
  }
  await render();
  follow(["job", "decision"], debounced(() => render().then(() => showError(null), showError)));
};



// Start or stop `guest` as the CLI does (a job), showing each guest's progress.
async function runJob(action, guest, into) {
  const response = await api("/v1/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ action, guests: [guest] }),
  });
  let job = await response.json();
  const show = () => fill(into,
    el("p", {}, `Job ${job.id}: ${action} ${guest}: ${job.state}`),
    table(["Guest", "Host", "Result", "Detail"], (job.results || []).map((r) => [r.guest, r.host || "", r.result, r.detail || ""])));
  show();
  while (job.state === "running") {
    await new Promise((resolve) => setTimeout(resolve, 500));
    job = await getJson(`/v1/jobs/${job.id}`);
    show();
  }
}

pages.graph = async () => {
  const form = document.getElementById("graph-filters");
  const params = new URLSearchParams(location.search);
  for (const name of ["guest", "label"]) form.elements[name].value = params.get(name) || "";
  const W = 190, H = 64, NODE_W = 160, NODE_H = 38;

  async function render() {
    const query = new URLSearchParams(location.search);
    const graph = await getJson(`/v1/graph?${query}`);
    const at = new Map(graph.nodes.map((n) => [n.guest, n]));
    const columns = Math.max(1, ...graph.nodes.map((n) => n.column + 1));
    const rows = Math.max(1, ...graph.nodes.map((n) => n.row + 1));
    const picture = svg("svg", {
      viewBox: `0 0 ${columns * W} ${rows * H}`, width: columns * W, height: rows * H,
      role: "img", "aria-labelledby": "graph-summary", class: "graph",
    },
      svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))),
      graph.edges.map((e) => {
        const from = at.get(e.to), to = at.get(e.from); // drawn from the dependency to its dependent
        const x1 = from.column * W + NODE_W, y1 = from.row * H + NODE_H / 2 + 8;
        const x2 = to.column * W, y2 = to.row * H + NODE_H / 2 + 8;
        const mid = (x1 + x2) / 2;
        return svg("path", {
          d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`,
          class: `edge ${e.kind} ${e.met ? "met" : "unmet"}`, "marker-end": "url(#arrow)",
        }, svg("title", {}, `${e.from} ${e.kind} ${e.to} (${e.when})${e.met ? "" : ": not met"}`));
      }),
      graph.nodes.map((n) => svg("a", { href: `/guests/${encodeURIComponent(n.guest)}` },
        svg("rect", {
          x: n.column * W, y: n.row * H + 8, width: NODE_W, height: NODE_H, rx: 6,
          class: `node state-${String(n.state || "undefined").replace(/\s+/g, "-")}${n.critical ? " critical" : ""}`,
        }),
        svg("text", { x: n.column * W + 8, y: n.row * H + 24 }, n.guest),
        svg("text", { x: n.column * W + 8, y: n.row * H + 38, class: "sub" }, `${n.state || "undefined"}${n.host ? ` · ${n.host}` : ""}`),
        svg("title", {}, n.blocked || `${n.guest}: ${n.state || "undefined"}`))),
    );
    const blocked = graph.nodes.filter((n) => n.blocked);
    fill("graph",
      el("p", { id: "graph-summary" }, `${graph.nodes.length} guests, ${graph.edges.length} dependencies; `
        + "start order left to right; the critical path has a thick border."),
      el("div", { class: "graph-scroll" }, picture),
      el("h2", {}, "Blocked"),
      blocked.length
        ? el("ul", { id: "blocked" }, blocked.map((n) => el("li", {}, n.blocked)))
        : el("p", { id: "blocked" }, "Nothing that is down is held back by what it requires."),
    );
    const actions = [];
    const guest = query.get("guest");
    if (guest && mayWrite()) {
      for (const action of ["start", "stop"]) {
        actions.push(el("button", { type: "button", onclick: () => runJob(action, guest, "job").catch(showError) },
          `${action === "start" ? "Start" : "Stop"} ${guest}`));
      }
    }
    fill("graph-actions", actions);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const name of ["guest", "label"]) {
      const value = form.elements[name].value.trim();
      if (value) next.set(name, value);
    }
    history.replaceState(null, "", next.toString() ? `?${next}` : location.pathname);
    render().catch(showError);
  });
  await render();
  follow(["lifecycle", "policy", "host"], debounced(() => render().then(() => showError(null), showError)));
};

async function main() {
  try {
    const who = await getJson("/v1/whoami");
    fill("who", `${who.actor} (${who.role})`);
    body.dataset.role = who.role;
    await pages[page]();
  } catch (error) {
    if (error instanceof Unauthorized) askForToken();
    else showError(error);
  } finally {
    document.getElementById("content").setAttribute("aria-busy", "false");
  }
}

main();
