// The guest page's policy editor: every field the API takes, saved with the
// revision guard (a stale edit shows who changed what and saves nothing), or
// a new policy for a guest that has none.

import { api, getJson, el, fill, showError } from "./common.js";

// Every field the API takes. A select's first option is "unset" (the
// policy's default); pinning fields show only for a shared guest, the
// dedicated ones only for a dedicated guest (the API refuses the others).
const FIELDS = [
  ["cpu.placement", "Placement", ["shared", "dedicated"]],
  ["cpu.weight", "CPU weight (1-10000)", "number"],
  ["cpu.cap", "CPU cap (% of one host CPU)", "number"],
  ["cpu.vcpus", "vCPUs on host CPUs (cpuset, or auto)", "text", "shared"],
  ["cpu.emulatorpin", "Emulator on host CPUs (cpuset)", "text", "shared"],
  ["cpu.threads", "SMT siblings", ["", "prefer", "isolate", "require"], "dedicated"],
  ["cpu.emulator", "Emulator threads", ["", "share", "isolate"], "dedicated"],
  ["numa.nodes", "Within NUMA nodes (count)", "number"],
  ["numa.memory", "NUMA memory mode", ["", "strict", "preferred", "interleave"]],
  ["memory.balloon", "Balloon", ["", "off", "auto"]],
  ["memory.floor", "Memory floor (e.g. 1G)", "text"],
  ["memory.weight", "Memory weight (1-10000)", "number"],
  ["memory.soft_limit", "Memory soft limit (e.g. 3G)", "text"],
  ["memory.free_page_reporting", "Free page reporting", ["", "on", "off"]],
  ["requires", "Requires (guests, comma between)", "list"],
  ["wants", "Wants (guests, comma between)", "list"],
  ["start.autostart", "Start with the daemon", "checkbox"],
  ["labels", "Labels (key=value, space between)", "labels"],
];

export function renderEditor(stored, { guest, path, editing: setEditing, reload }) {
  const policy = stored.policy || {};
  const creating = stored.revision === 0;
  const value = (path) => path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), policy);
  const shown = (path) => {
    const v = value(path);
    if (path === "labels") return Object.entries(v || {}).map(([k, x]) => `${k}=${x}`).join(" ");
    if (path === "requires" || path === "wants") return (v || []).map((d) => d.guest).join(", ");
    if (path === "memory.free_page_reporting") return v === true ? "on" : v === false ? "off" : "";
    return v == null ? "" : String(v);
  };
  const input = (path, kind) => {
    if (Array.isArray(kind)) {
      const now = shown(path) || (path === "cpu.placement" ? "shared" : "");
      return el("select", { name: path }, kind.map((o) => el("option", { value: o, selected: now === o }, o || "(unset)")));
    }
    if (kind === "checkbox") return el("input", { type: "checkbox", name: path, checked: value(path) === true });
    return el("input", { type: kind === "number" ? "number" : "text", name: path, value: shown(path) });
  };
  const field = ([path, label, kind, only]) => {
    const id = `f-${path.replace(/\./g, "-")}`;
    const error = el("span", { class: "field-error", id: `${id}-error`, role: "alert" });
    const box = input(path, kind);
    box.id = id;
    box.dataset.field = path;
    box.dataset.kind = Array.isArray(kind) ? "select" : kind;
    box.setAttribute("aria-describedby", `${id}-error`);
    return el("div", { class: "field", "data-only": only || "" }, el("label", { for: id }, label), box, error);
  };
  const form = el("form", { id: "editor", class: "editor", novalidate: true },
    el("h3", {}, creating ? "New policy" : `Edit (revision ${stored.revision})`),
    FIELDS.map(field),
    el("div", { class: "actions" }, el("button", { type: "submit" }, creating ? "Create" : "Save"),
      el("button", { type: "button", onclick: () => { setEditing(false); reload().catch(showError); } }, "Discard")),
    el("div", { id: "conflict", role: "alert" }),
  );
  const placementNow = () => form.elements["cpu.placement"].value;
  const fit = () => {
    for (const div of form.querySelectorAll(".field[data-only]")) {
      div.hidden = Boolean(div.dataset.only) && div.dataset.only !== placementNow();
    }
  };
  fit();
  form.addEventListener("input", () => { setEditing(true); fit(); });
  form.addEventListener("change", () => { setEditing(true); fit(); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const span of form.querySelectorAll(".field-error")) span.textContent = "";
    for (const box of form.querySelectorAll("[aria-invalid]")) box.removeAttribute("aria-invalid");
    fill("conflict");
    const patch = {};
    const set = (path, v) => {
      const keys = path.split(".");
      let o = patch;
      for (const k of keys.slice(0, -1)) o = o[k] ??= {};
      o[keys.at(-1)] = v;
    };
    for (const box of form.querySelectorAll("[data-field]")) {
      const path = box.dataset.field, kind = box.dataset.kind;
      if (box.closest(".field").hidden) { // not for this placement: cleared
        if (value(path) != null && !(Array.isArray(value(path)) && !value(path).length)) set(path, null);
        continue;
      }
      if (kind === "labels") {
        const wanted = {};
        for (const pair of box.value.split(/\s+/).filter(Boolean)) {
          const at = pair.indexOf("=");
          wanted[at < 0 ? pair : pair.slice(0, at)] = at < 0 ? "" : pair.slice(at + 1);
        }
        const had = policy.labels || {};
        const labelPatch = {};
        for (const k of Object.keys(had)) if (!(k in wanted)) labelPatch[k] = null;
        for (const [k, v] of Object.entries(wanted)) if (had[k] !== v) labelPatch[k] = v;
        if (Object.keys(labelPatch).length) patch.labels = labelPatch;
        continue;
      }
      if (kind === "list") {
        if (box.value.trim() === shown(path)) continue;
        const kept = new Map((value(path) || []).map((d) => [d.guest, d])); // their conditions stay
        set(path, box.value.split(",").map((g) => g.trim()).filter(Boolean).map((g) => kept.get(g) || { guest: g }));
        continue;
      }
      let now;
      if (kind === "checkbox") now = box.checked ? true : null;
      else if (box.value.trim() === "") now = null;
      else if (path === "memory.free_page_reporting") now = box.value === "on";
      else now = kind === "number" ? Number(box.value) : box.value.trim();
      if (path === "cpu.placement" && now === "shared") now = null;
      const before = value(path) ?? null;
      if (now !== before) set(path, now);
    }
    try {
      if (creating) {
        await api(`/v1/policies/${path}`, {
          method: "PUT",
          headers: { "Content-Type": "application/json", "If-Match": '"0"' },
          body: JSON.stringify(prune({ ...patch, guest })),
        });
      } else {
        await api(`/v1/policies/${path}`, {
          method: "PATCH",
          headers: { "Content-Type": "application/json", "If-Match": `"${stored.revision}"` },
          body: JSON.stringify(patch),
        });
      }
      setEditing(false);
      await reload();
    } catch (error) {
      if (error.status === 412) return showConflict(path, stored.revision);
      const name = error.detail?.error?.field;
      const top = name && name.split(".").slice(0, name.startsWith("requires") || name.startsWith("wants") ? 1 : 2).join(".").replace(/\[\d+\]$/, "");
      const box = top && form.querySelector(`[data-field="${CSS.escape(top)}"]`);
      if (box) {
        box.setAttribute("aria-invalid", "true");
        document.getElementById(`${box.id}-error`).textContent = error.message;
        box.focus();
      } else {
        showError(error);
      }
    }
  });
  fill("edit", form);
}

// A new policy's document: without the nulls a merge patch would send.
function prune(doc) {
  const out = {};
  for (const [k, v] of Object.entries(doc)) {
    if (v === null) continue;
    out[k] = v && typeof v === "object" && !Array.isArray(v) ? prune(v) : v;
  }
  return out;
}

// The policy moved on since the form was opened: who changed what, and nothing saved.
async function showConflict(path, opened) {
  const history = await getJson(`/v1/policies/${path}/history`);
  const since = history.filter((h) => h.revision > opened);
  const last = since.at(-1) || history.at(-1);
  fill("conflict",
    el("p", { class: "error-text" },
      `Not saved: changed by ${last.actor} at ${last.time} since you opened it (revision ${opened} → ${last.revision}).`),
    el("ul", { class: "diff", "aria-label": "What changed" }, since.map((h) => el("li", {}, `${h.revision}: ${h.change}`))),
    el("p", {}, "Discard to start again from the current policy."));
}
