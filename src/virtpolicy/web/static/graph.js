// The dependency graph, laid out in start waves, with what blocks each guest.

import { getJson, el, svg, fill, showError, follow, debounced, actionButton } from "./common.js";

export async function graphPage() {
  const form = document.getElementById("graph-filters");
  const params = new URLSearchParams(location.search);
  for (const name of ["guest", "label"]) form.elements[name].value = params.get(name) || "";
  // Columns are start waves, rows within them; between two rows a free lane
  // (under each node, its first reason), where an edge that skips columns runs.
  const W = 190, H = 84, NODE_W = 160, NODE_H = 38, TOP = 30;
  const top = (row) => TOP + row * H;
  const lane = (row) => (row < 0 ? TOP - 16 : top(row) + NODE_H + 30); // under row `row`

  // An edge from a dependency to its dependent: straight into the next
  // column; one that skips columns runs through each column in between along
  // the free lane nearest its line, so it never crosses a node.
  function route(from, to) {
    const x1 = from.column * W + NODE_W, y1 = top(from.row) + NODE_H / 2;
    const x2 = to.column * W, y2 = top(to.row) + NODE_H / 2;
    const points = [[x1, y1]];
    for (let c = from.column + 1; c < to.column; c++) {
      const at = y1 + ((y2 - y1) * (c - from.column)) / (to.column - from.column);
      const row = Math.max(-1, Math.round((at - TOP - NODE_H - 30) / H));
      points.push([c * W - 10, lane(row)], [c * W + NODE_W + 10, lane(row)]);
    }
    points.push([x2, y2]);
    return points.map(([x, y], i) => `${i ? "L" : "M"} ${x} ${y}`).join(" ");
  }

  async function render() {
    const query = new URLSearchParams(location.search);
    const graph = await getJson(`/v1/graph?${query}`);
    const at = new Map(graph.nodes.map((n) => [n.guest, n]));
    const columns = Math.max(1, ...graph.nodes.map((n) => n.column + 1));
    const rows = Math.max(1, ...graph.nodes.map((n) => n.row + 1));
    const width = columns * W, height = top(rows) + 10;
    const picture = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, width, height,
      role: "img", "aria-labelledby": "graph-summary", class: "graph",
    },
      svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))),
      graph.edges.map((e) => svg("path", {
        d: route(at.get(e.to), at.get(e.from)), // drawn from the dependency to its dependent
        class: `edge ${e.kind} ${e.met ? "met" : "unmet"}`, "marker-end": "url(#arrow)",
        "data-from": e.from, "data-to": e.to,
      }, svg("title", {}, `${e.from} ${e.kind} ${e.to} (${e.when})${e.met ? "" : ": not met"}`))),
      graph.nodes.map((n) => svg("a", { href: `/guests/${encodeURIComponent(n.guest)}` },
        svg("rect", {
          x: n.column * W, y: top(n.row), width: NODE_W, height: NODE_H, rx: 6, "data-guest": n.guest,
          class: `node state-${String(n.state || "undefined").replace(/\s+/g, "-")}${n.critical ? " critical" : ""}`,
        }),
        svg("text", { x: n.column * W + 8, y: top(n.row) + 16 }, n.guest),
        svg("text", { x: n.column * W + 8, y: top(n.row) + 31, class: "sub" }, `${n.state || "undefined"}${n.host ? ` · ${n.host}` : ""}`),
        n.why?.length ? svg("text", { x: n.column * W + 8, y: top(n.row) + NODE_H + 14, class: `why why-${n.why[0].severity}` }, n.why[0].kind) : null,
        svg("title", {}, [`${n.guest}: ${n.state || "undefined"}`, ...(n.why || []).map((w) => w.text)].join("\n")))),
    );
    const critical = graph.nodes.filter((n) => n.critical).sort((a, b) => a.column - b.column).map((n) => n.guest);
    const legend = el("ul", { class: "legend", "aria-label": "Legend" },
      el("li", {}, el("span", { class: "key requires" }), "requires: it starts only once that one is up"),
      el("li", {}, el("span", { class: "key wants" }), "wants: started first if it can be, not waited for"),
      el("li", {}, el("span", { class: "key unmet" }), "red: not met now (that guest is not up)"),
      el("li", {}, el("span", { class: "key critical" }),
        critical.length > 1 ? `thick border: the critical path, ${critical.join(" → ")}: the longest chain of starts, which sets how long starting everything takes`
          : "thick border: the critical path (the longest chain of starts)"),
      el("li", {}, "Columns are start waves: each guest starts after everything to its left that it depends on."));
    const blocked = graph.nodes.filter((n) => n.blocked);
    fill("graph",
      el("p", { id: "graph-summary" }, `${graph.nodes.length} guests, ${graph.edges.length} dependencies; `
        + "start order left to right; the critical path has a thick border."),
      el("div", { class: "graph-scroll" }, picture),
      legend,
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
