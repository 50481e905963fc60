// The dependency graph, laid out in start waves, with what blocks each guest.

import { getJson, el, svg, fill, showError, follow, debounced, actionButton } from "./common.js";

export async function graphPage() {
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
        n.why?.length ? svg("text", { x: n.column * W + 8, y: n.row * H + 58, class: `why why-${n.why[0].severity}` }, n.why[0].kind) : null,
        svg("title", {}, [`${n.guest}: ${n.state || "undefined"}`, ...(n.why || []).map((w) => w.text)].join("\n")))),
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
    const guest = query.get("guest");
    fill("graph-actions", guest ? actionButton(guest, at.get(guest)?.state, "job") : null);
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
}
