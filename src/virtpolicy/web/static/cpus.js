// The CPU map: where the placer put each guest, per host CPU.

import { getJson, el, fill, showError, guestLink, kib } from "./common.js";

export async function cpusPage() {
  async function render() {
    const [me, hosts] = await Promise.all([getJson("/v1/host"), getJson("/v1/hosts")]);
    const picked = new URLSearchParams(location.search).get("host") || me.host;
    const mine = picked === me.host;
    const name = encodeURIComponent(picked);
    const [placement, host, listed] = await Promise.all([
      getJson(`/v1/placement?host=${name}`),
      mine ? getJson("/v1/stats/host") : { cpus: [] }, // another host's load is on its own daemon
      getJson(`/v1/fleet/guests?host=${name}&limit=500`),
    ]);
    const rows = listed.guests;
    const busy = new Map(host.cpus.map((c) => [c.cpu, c.busy_percent]));
    const picker = el("label", {}, "Host ", el("select", {
      id: "cpu-host", onchange: (event) => {
        history.replaceState(null, "", `?host=${encodeURIComponent(event.target.value)}`);
        render().then(() => showError(null), showError);
      },
    }, [...new Set([me.host, ...hosts.map((h) => h.name)])].map((h) => el("option", { value: h, selected: h === picked }, h))));
    const memory = placement.node_memory_kib || {};
    const nodes = new Map();
    for (const row of placement.cpus) {
      if (!nodes.has(row.node)) nodes.set(row.node, new Map());
      const cores = nodes.get(row.node);
      if (!cores.has(row.core)) cores.set(row.core, []);
      cores.get(row.core).push(row);
    }
    // What is pinned now, as libvirt says (beside the plan): each running
    // guest's vCPUs on the CPUs they are pinned to, when not free to run anywhere.
    const every = placement.cpus.length;
    const pinned = new Map();
    for (const g of rows) {
      if (g.state !== "running") continue;
      for (const [vcpu, set] of Object.entries(g.actual?.vcpupin || {})) {
        const cpus = cpuList(set);
        if (cpus.length && cpus.length < every) for (const c of cpus) (pinned.get(c) || pinned.set(c, []).get(c)).push(`${g.guest} vCPU ${vcpu}`);
      }
    }
    const unpinned = rows.filter((g) => (g.why || []).some((w) => w.kind === "running unpinned"));
    // Room for a new dedicated guest as the placer counts it: CPUs neither
    // dedicated nor reserved, less the one it always leaves shared on the host.
    const open = (t) => !/vCPU|emulator|kept idle/.test(t.use) && t.use !== "reserved";
    const free = placement.cpus.filter(open).length;
    const room = (cores) => {
      const threads = Math.max(0, Math.min([...cores.values()].flat().filter(open).length, free - 1));
      const whole = [...cores.values()].filter((ts) => ts.every(open) && ts.length <= free - 1).length;
      return `For a new dedicated guest: ${threads} ${threads === 1 ? "CPU" : "CPUs"}, ${whole} whole ${whole === 1 ? "core" : "cores"}.`;
    };
    const shade = (pct) => (pct === null || pct === undefined ? "unknown" : `b${Math.min(10, Math.round(pct / 10))}`);
    fill("cpus",
      el("div", { class: "filters" }, picker),
      el("p", { class: "host-name" }, "Host ", el("strong", {}, picked), mine ? " (this daemon's)" : " (as its daemon last published it; no load shown)", `, ${every} CPUs. `, placement.in_play
        ? `Placement is in play${placement.reserved ? `; CPUs ${placement.reserved} are reserved for the host` : ""}.`
        : "Placement is not in play: no guest here asks for dedicated CPUs or NUMA nodes."),
      unpinned.length
        ? el("div", { class: "error-text", id: "unpinned" }, "Running unpinned (its vCPUs may run on any CPU): ",
            unpinned.flatMap((g, i) => [i ? ", " : "", guestLink(g.guest)]))
        : null,
      [...nodes].map(([node, cores]) => el("section", { class: "node", "aria-label": `NUMA node ${node}` },
        el("h2", {}, `Node ${node}`, memory[node] ? ` · ${kib(memory[node])} of memory` : ""),
        el("p", { class: "room" }, room(cores)),
        el("div", { class: "cores" }, [...cores].map(([core, threads]) => el("div", { class: "core", "aria-label": `core ${core}` },
          threads.map((t) => el("div", {
            class: `cpu ${shade(busy.get(t.cpu))} ${/vCPU|emulator|kept idle/.test(t.use) ? "dedicated" : t.use === "reserved" ? "reserved" : "shared"}`,
            "data-cpu": t.cpu,
            title: `CPU ${t.cpu}: planned ${t.use}; pinned now: ${(pinned.get(t.cpu) || []).join(", ") || "nothing"}`,
          }, el("span", { class: "id" }, `CPU ${t.cpu}`),
             el("span", { class: "busy" }, busy.get(t.cpu) == null ? "—" : `${Math.round(busy.get(t.cpu))} %`),
             el("span", { class: "use" }, useWithLinks(t.use)),
             el("span", { class: "now" }, pinned.has(t.cpu) ? `now: ${pinned.get(t.cpu).join(", ")}` : "")))))))),
      Object.keys(placement.refused).length
        ? el("ul", { class: "problems", "aria-label": "Refused" }, Object.values(placement.refused).map((r) => el("li", {}, r)))
        : null,
      el("ul", { class: "legend", "aria-label": "Legend" },
        el("li", {}, el("span", { class: "key ded" }), "left border purple: dedicated (a guest's vCPU or emulator, or the sibling kept idle for it)"),
        el("li", {}, el("span", { class: "key res" }), "grey: reserved for the host; no border colour: shared"),
        el("li", {}, "shade: how busy the CPU was over the last sample, from green (idle) to red (full)"),
        el("li", {}, "the first line is the placer's plan; \"now:\" is what libvirt has pinned there")),
    );
  }
  await render();
  setInterval(() => render().then(() => showError(null), showError), 5000);
}

// "0-2,5" -> [0, 1, 2, 5]
function cpuList(text) {
  const out = [];
  for (const part of String(text).split(",")) {
    const [a, b] = part.split("-").map(Number);
    if (Number.isInteger(a)) for (let c = a; c <= (Number.isInteger(b) ? b : a); c++) out.push(c);
  }
  return out;
}

// A CPU's use with each guest's name a link to its page: "db vCPU 0",
// "db (kept idle)", "shared: a, b" (the text itself unchanged).
function useWithLinks(use) {
  if (use.startsWith("shared: ")) {
    return ["shared: ", use.slice(8).split(", ").flatMap((g, i) => (i ? [", ", guestLink(g)] : [guestLink(g)]))];
  }
  return use.split("; ").flatMap((part, i) => {
    const at = part.search(/ (vCPU \d+|emulator|\(kept idle\))$/);
    const piece = at > 0 ? [guestLink(part.slice(0, at)), part.slice(at)] : [part];
    return i ? ["; ", ...piece] : piece;
  });
}
