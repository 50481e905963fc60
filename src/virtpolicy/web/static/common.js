// What every page of virtpolicy's web page shares: the API and its errors, the
// token, building elements (text reaches the page only through textContent, in
// el() below, never as HTML), the event stream, and running a job.

export const body = document.body;
export const page = body.dataset.page;
export const TOKEN_KEY = "virtpolicy.token"; // sessionStorage: this tab only
export const PAGE_SIZE = 100;

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

export function headers(extra = {}) {
  const h = new Headers(extra);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h.set("Authorization", `Bearer ${token}`);
  if (!h.has("Accept")) h.set("Accept", "application/json");
  return h;
}

export async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) {
    throw new ApiError(response.status, await response.json().catch(() => null));
  }
  return response;
}

export const getJson = async (path) => (await api(path)).json();

// An element with attributes (on*: listeners) and children (strings become text).
export function el(tag, attrs = {}, ...children) {
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

export const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function table(headings, rows, caption) {
  return el(
    "table",
    {},
    caption ? el("caption", {}, caption) : null,
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))),
  );
}

export function fill(id, ...children) {
  const target = document.getElementById(id);
  const shown = children.flat().filter((c) => c !== null && c !== undefined && c !== false);
  if (target) target.replaceChildren(...shown);
}

export function showError(error) {
  const box = document.getElementById("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

export function askForToken() {
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
export const mayWrite = () => ["operator", "admin"].includes(body.dataset.role) && body.dataset.listener !== "unix-ro";

export const guestLink = (name) => el("a", { href: `/guests/${encodeURIComponent(name)}` }, name);
export const stateBadge = (state) =>
  el("span", { class: `state state-${String(state || "unknown").replace(/\s+/g, "-")}` }, state || "unknown");

export function driftText(drift) {
  const keys = Object.keys(drift || {});
  return keys.length ? keys.map((k) => `${k}: ${drift[k].actual} → ${drift[k].desired}`).join("; ") : "";
}

// -- the event stream -----------------------------------------------------------

// /v1/events through fetch (EventSource cannot send the token): each event's
// kind and data to onEvent; reconnects after a drop, from the last id seen.
// A page left for another lets go of its streams (a page kept in the
// browser's back-forward cache would otherwise hold a connection each, and
// the browser opens only six to one server); shown again, it reloads.
const leaving = new AbortController();
addEventListener("pagehide", () => leaving.abort());
addEventListener("pageshow", (event) => { if (event.persisted) location.reload(); });

export async function follow(kinds, onEvent) {
  let last = null;
  while (!leaving.signal.aborted) {
    try {
      const query = kinds.map((k) => `kind=${encodeURIComponent(k)}`).join("&");
      const extra = last === null ? {} : { "Last-Event-ID": last };
      const response = await api(`/v1/events?${query}`, { headers: { ...extra, Accept: "text/event-stream" }, signal: leaving.signal });
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
export function debounced(refresh, wait = 500) {
  let timer = null;
  return () => {
    if (timer === null) timer = setTimeout(() => { timer = null; refresh(); }, wait);
  };
}

// Start, stop or migrate `guest` as the CLI does (a job; `more`: e.g. the host
// to migrate to), showing each guest's progress.
export async function runJob(action, guest, into, more = {}) {
  const response = await api("/v1/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ action, guests: [guest], ...more }),
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

// KiB as people read it: "512 MiB", "3.8 GiB"; "—" when not known.
export function kib(value) {
  if (value === null || value === undefined) return "—";
  return value < 10 * 1024 * 1024 ? `${Math.round(value / 1024)} MiB` : `${(value / 1024 / 1024).toFixed(1)} GiB`;
}

// A host's memory in use and its pressure (PSI), as the API gives them.
export function hostMemory(memory) {
  if (!memory) return ["—", "—"];
  const used = memory.used_percent == null ? "—" : `${memory.used_percent} % of ${kib(memory.total_kib)}`;
  const stall = memory.stall_percent == null ? "—" : `${memory.stall_percent} % stalled`;
  return [used, stall];
}

// What a tuner's decision does, as one short text: "vcpupin.0=2-3", "balloon=512 MiB".
export function decisionWhat(d) {
  const value = d.action === "balloon" ? kib(d.value) : d.value;
  return `${d.action}${d.vcpu == null ? "" : `.${d.vcpu}`}=${value}`;
}

// A guest's first reason (the engine orders them, most severe first), and the
// others on hover; "—" when there is none.
export function whyText(why) {
  if (!why || !why.length) return "—";
  const [first, ...rest] = why;
  return el("span", { class: `why why-${first.severity}`, title: why.map((w) => w.text).join("\n") },
    first.text, rest.length ? ` (+${rest.length} more)` : "");
}

// -- safe actions ---------------------------------------------------------------

const ACTIVE = new Set(["running", "paused", "blocked", "pmsuspended"]);
const VERB = { start: ["Start", "starts"], stop: ["Stop", "stops"] };

// The one action a guest's state offers (Start a guest that is down, Stop one
// that is up), for an operator; it previews the plan in `into` and runs
// nothing until confirmed. Null for a reader, or a guest with no known state.
export function actionButton(guest, state, into) {
  if (!mayWrite() || !state || state === "unknown") return null;
  const action = ACTIVE.has(state) ? "stop" : "start";
  return el("button", {
    type: "button", class: "action", "data-action": action, "data-guest": guest,
    onclick: () => preview(action, guest, into).catch(showError),
  }, `${VERB[action][0]}…`);
}

// What `action` on `guest` would do, in order, and what would refuse it; a
// Confirm button runs it (as the CLI's job), Cancel drops it.
export async function preview(action, guest, into) {
  const name = encodeURIComponent(guest);
  const [plan, graph] = await Promise.all([
    getJson(`/v1/plan/${action}?guest=${name}`),
    action === "start" ? getJson(`/v1/graph?guest=${name}`) : { nodes: [] },
  ]);
  const [Verb, verbs] = VERB[action];
  const order = plan.waves.flat();
  const others = order.filter((g) => g !== guest);
  const said = others.length
    ? `${Verb} ${guest} also ${verbs} ${others.join(", ")}, in this order: ${plan.waves.map((w) => w.join(", ")).join(" → ")}.`
    : `${Verb} ${guest}: nothing else ${verbs} with it.`;
  const refused = graph.nodes
    .filter((n) => order.includes(n.guest))
    .flatMap((n) => (n.why || []).filter((w) => w.kind === "placement refused").map((w) => w.text));
  const cancel = el("button", { type: "button", onclick: () => fill(into) }, "Cancel");
  const confirm = el("button", {
    type: "button", class: "confirm",
    onclick: () => runJob(action, guest, into).catch(showError),
  }, `Confirm: ${action} ${guest}`);
  fill(into, el("div", { class: "preview", role: "region", "aria-label": `${Verb} ${guest}` },
    el("p", { class: "preview-text" }, said),
    refused.length
      ? [el("p", { class: "error-text refused" }, `It would be refused: ${refused.join("; ")}`), el("div", { class: "actions" }, cancel)]
      : el("div", { class: "actions" }, confirm, cancel)));
  document.getElementById(into)?.scrollIntoView({ block: "nearest" });
}

// -- time, as people read it ------------------------------------------------------

// A moment (ISO text or Unix seconds) in the browser's time zone, with how long
// ago; the exact UTC time on hover.
export function when(t) {
  if (t === null || t === undefined || t === "") return "—";
  const date = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  if (Number.isNaN(date.getTime())) return String(t);
  const local = date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
  return el("time", { datetime: date.toISOString(), title: date.toISOString() }, `${local} (${ago(date)})`);
}

export function ago(date) {
  const s = Math.round((Date.now() - date.getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

// How long from `start` to `end` (or to now, still running): "2.4 s", "3 min".
export function took(start, end) {
  const from = new Date(start).getTime(), to = end ? new Date(end).getTime() : Date.now();
  if (Number.isNaN(from) || Number.isNaN(to)) return "—";
  const s = Math.max(0, (to - from) / 1000);
  const text = s < 60 ? `${s.toFixed(1)} s` : s < 3600 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
  return end ? text : `${text} so far`;
}
