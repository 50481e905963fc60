// The CPU map: where the placer put each guest, per host CPU.

import { getJson, el, fill, showError } from "./common.js";

export async function cpusPage() {
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
}
