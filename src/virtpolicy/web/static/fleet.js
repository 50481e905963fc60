// The fleet page: every guest of every host, filtered and paged.

import { PAGE_SIZE, getJson, el, table, fill, showError, guestLink, stateBadge, follow, debounced, hostMemory, whyText, actionButton } from "./common.js";

export async function fleetPage() {
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
      ? table(["Host", "State", "Guests", "Running", "Memory in use", "Memory pressure", "Heartbeat"],
          hosts.map((h) => [h.name, stateBadge(h.state), h.guests, h.running, ...hostMemory(h.memory), `${h.heartbeat_age_s} s ago`]))
      : el("p", {}, "No host has joined yet."));
    const first = guests.total ? offset + 1 : 0;
    fill("count", `${guests.total} guests${guests.total ? `; ${first}–${offset + guests.guests.length} shown` : ""}`);
    fill("guests", table(
      ["Guest", "State", "Why", "Host", "Revision", "Labels"],
      guests.guests.map((g) => [
        guestLink(g.guest),
        [stateBadge(g.state), " ", actionButton(g.guest, g.state, "action")],
        whyText(g.why),
        g.host || "—",
        g.policy_revision ?? "—",
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
}
