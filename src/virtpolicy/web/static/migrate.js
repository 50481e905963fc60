// Migrating a running guest to another host of the fleet, from its page: pick
// the host, see whether it takes the guest (as its daemon last published
// itself), and only then Confirm; the job runs on the guest's own host.

import { getJson, el, fill, showError, mayWrite, runJob } from "./common.js";

// "Migrate…" for an operator, on a running guest of a fleet with another host up.
export async function migrateButton(guest, state, host, into) {
  if (!mayWrite() || state !== "running" || !host) return null;
  const hosts = (await getJson("/v1/hosts")).filter((h) => h.state === "up" && h.name !== host);
  if (!hosts.length) return null;
  return el("button", {
    type: "button", class: "action migrate", "data-action": "migrate", "data-guest": guest,
    onclick: () => choose(guest, host, hosts.map((h) => h.name), into),
  }, "Migrate…");
}

function choose(guest, host, hosts, into) {
  const picked = el("select", { id: "migrate-to", "aria-label": "Migrate to host" },
    hosts.map((h) => el("option", { value: h }, h)));
  const answer = el("div", { id: "migrate-answer", "aria-live": "polite" });
  const check = () => ask(guest, picked.value, into).catch(showError);
  picked.addEventListener("change", check);
  fill(into, el("div", { class: "preview", role: "region", "aria-label": `Migrate ${guest}` },
    el("p", { class: "preview-text" }, `Migrate ${guest} live from ${host} to `, picked),
    answer));
  check();
}

// Ask whether `to` takes `guest`; Confirm only when it does. Nothing moves before.
async function ask(guest, to, into) {
  const verdict = await getJson(
    `/v1/guests/${encodeURIComponent(guest)}/migration?to=${encodeURIComponent(to)}`);
  const cancel = el("button", { type: "button", onclick: () => fill(into) }, "Cancel");
  const confirm = el("button", {
    type: "button", class: "confirm",
    onclick: () => runJob("migrate", guest, into, { to }).catch(showError),
  }, `Confirm: migrate ${guest} to ${to}`);
  fill("migrate-answer", verdict.allowed
    ? [el("p", {}, `${to} takes it: its policy goes with it.`), el("div", { class: "actions" }, confirm, cancel)]
    : [el("p", { class: "error-text refused" }, `${to} refuses it: ${verdict.reasons.join("; ")}`), el("div", { class: "actions" }, cancel)]);
}
