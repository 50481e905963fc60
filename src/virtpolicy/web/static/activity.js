// Activity: jobs, and a timeline of what the daemon did and saw.

import { getJson, el, table, fill, showError, follow, debounced, decisionWhat, when, took } from "./common.js";

// What the timeline shows, and how each kind of event reads.
const KINDS = {
  enforcement: ["Repairs", (e) => `${e.guest}: ${Object.entries(e.applied || {}).map(([k, c]) => `${k} ${c.from} → ${c.to}`).join("; ")}`],
  decision: ["Tuner decisions", (e) => `${e.guest}: ${e.tuner} ${decisionWhat(e)}, ${e.outcome}: ${e.reason}`],
  host: ["Hosts", (e) => `host ${e.host} is ${e.state}${e.detail ? ` (${e.detail})` : ""}`],
  lifecycle: ["Guests started and stopped", (e) => `${e.guest}: ${e.event}`],
  policy: ["Policy writes", (e) => (e.guest ? `${e.guest}: revision ${e.revision} (${e.action}) by ${e.actor}` : "policies re-read")],
  dependency: ["Dependencies", (e) => `${e.guest}: ${e.dependency || ""} ${e.event || ""}`.trim()],
};

export async function activityPage() {
  const form = document.getElementById("timeline-filters");
  const shown = () => Object.keys(KINDS).filter((k) => form.elements[k].checked);
  fill("timeline-filters", Object.entries(KINDS).map(([kind, [label]]) =>
    el("label", { class: "check" }, el("input", { type: "checkbox", name: kind, checked: kind !== "lifecycle" }), label)));

  function showJob(job) {
    fill("job-detail",
      el("h3", { id: `job-${job.id}` }, `Job ${job.id}: ${job.action} ${(job.guests || []).join(", ")}`),
      el("p", {}, "By ", job.actor, " on ", job.host || "—", ", ", when(job.created_at), ", took ", took(job.created_at, job.finished_at), `: ${job.state}`,
        job.detail ? ` (${job.detail})` : ""),
      table(["Guest", "Host", "Result", "Detail"], (job.results || []).map((r) => [r.guest, r.host || "—", r.result, r.detail || ""]), "Each guest, in the order it finished"));
  }

  async function render() {
    const [jobs, events, tuners] = await Promise.all([
      getJson("/v1/jobs"),
      getJson(`/v1/events/recent?${shown().map((k) => `kind=${k}`).join("&") || "kind=host"}&limit=200`),
      getJson("/v1/tuners"),
    ]);
    fill("jobs", jobs.length
      ? table(["Job", "Action", "State", "Started", "Took", "Host", "Actor", "Guests"], jobs.map((j) => [
          el("a", { href: `#job-${j.id}`, onclick: () => showJob(j) }, String(j.id)),
          j.action, j.state, when(j.created_at), took(j.created_at, j.finished_at), j.host || "—", j.actor,
          (j.results || []).length ? j.results.map((r) => `${r.guest}: ${r.result}`).join(", ") : (j.guests || []).join(", "),
        ]))
      : el("p", { class: "empty" }, "No job yet: starts and stops (virtpolicy start, stop, or this page) show here."));
    const kinds = shown();
    const picked = events.filter((e) => kinds.includes(e.kind) && (e.kind !== "decision" || e.verdict !== "no change"));
    fill("timeline", picked.length
      ? table(["Time", "What", ""], picked.map((e) => [when(e.time), KINDS[e.kind][0], KINDS[e.kind][1](e)]))
      : el("p", { class: "empty" }, `Nothing of these kinds since the daemon started. Tuners running: ${(tuners.running || []).join(", ") || "none"}${tuners.dry_run ? " (dry run)" : ""}.`));
  }

  form.addEventListener("change", () => render().catch(showError));
  await render();
  follow(["job", "decision", "enforcement", "host", "lifecycle", "policy", "dependency"], debounced(() => render().then(() => showError(null), showError)));
}
