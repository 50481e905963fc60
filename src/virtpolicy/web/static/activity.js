// Activity: jobs and the tuners' decisions.

import { getJson, table, fill, showError, follow, debounced, decisionWhat } from "./common.js";

export async function activityPage() {
  async function render() {
    const [jobs, decisions] = await Promise.all([getJson("/v1/jobs"), getJson("/v1/decisions?limit=100")]);
    fill("jobs", table(["Job", "Action", "State", "Actor", "Guests"],
      jobs.map((j) => [j.id, j.action, j.state, j.actor, (j.guests || []).join(", ")])));
    const list = Array.isArray(decisions) ? decisions : decisions.decisions || [];
    fill("decisions", table(["Time", "Tuner", "Guest", "What", "Outcome", "Why"],
      list.map((d) => [d.time, d.tuner, d.guest, decisionWhat(d), d.outcome, d.reason])));
  }
  await render();
  follow(["job", "decision"], debounced(() => render().then(() => showError(null), showError)));
}
