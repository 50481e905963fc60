// virtpolicy's web page: asks the API for everything, renders it, follows the
// event stream. No framework, no build step and nothing from the internet: the
// browser loads these modules as they are, one per page and one they share.

import { activityPage } from "./activity.js";
import { cpusPage } from "./cpus.js";
import { fleetPage } from "./fleet.js";
import { graphPage } from "./graph.js";
import { guestPage } from "./guest.js";
import { body, page, Unauthorized, getJson, fill, showError, askForToken } from "./common.js";

const pages = {
  fleet: fleetPage,
  guest: guestPage,
  cpus: cpusPage,
  activity: activityPage,
  graph: graphPage,
};

async function main() {
  try {
    const who = await getJson("/v1/whoami");
    fill("who", `${who.actor} (${who.role})`);
    body.dataset.role = who.role;
    await pages[page]();
  } catch (error) {
    if (error instanceof Unauthorized) askForToken();
    else showError(error);
  } finally {
    document.getElementById("content").setAttribute("aria-busy", "false");
  }
}

main();
