// The console's shell: sign-in, the page router (#/why, #/preview, ...), the session line.

import { ApiError, forget, get, remember, token, tokenFrom } from "./api.js";
import { clear, errorBox, h, loading } from "./dom.js";
import { activityPage } from "./pages/activity.js";
import { healthPage } from "./pages/health.js";
import { filePage, policyPage } from "./pages/policy.js";
import { previewPage } from "./pages/preview.js";
import { whyPage } from "./pages/why.js";

const PAGES = {
  why: { title: "Why did (or would) this happen?", render: whyPage },
  preview: { title: "Preview", render: previewPage },
  policy: { title: "Policy", render: policyPage },
  "policy/file": { title: "Policy file", render: filePage, nav: "policy" },
  activity: { title: "Activity", render: activityPage },
  health: { title: "Health", render: healthPage },
};

const main = () => document.getElementById("main");
export const session = { principal: null };

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  return { name: PAGES[path] ? path : "why", params: new URLSearchParams(query || "") };
}

function markNav(name) {
  const current = PAGES[name]?.nav || name;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function showSession() {
  const box = clear(document.getElementById("session"));
  const who = session.principal;
  if (!who) return;
  const scope = who.admin ? "admin" : `events ${who.events.join(", ")}`;
  const kind = who.kind === "console_link" ? `console link until ${new Date(who.expires_at).toLocaleString()}` : "API key";
  box.append(
    h("span", { class: "who" }, `Signed in: ${who.name} (${scope}; ${kind})`),
    h("button", { type: "button", class: "link", on: { click: signOut } }, "Sign out"),
  );
}

function signOut() {
  forget();
  session.principal = null;
  showSession();
  render();
}

function signInPage(problem) {
  const input = h("input", {
    id: "key", type: "password", autocomplete: "off", required: true, spellcheck: "false",
    "aria-describedby": "key-hint",
  });
  const form = h(
    "form",
    { class: "card signin", "aria-label": "Sign in" },
    h("div", { class: "field" },
      h("label", { for: "key" }, "API key or console link"),
      input,
      h("p", { class: "hint", id: "key-hint" },
        "Kept in this tab only (sessionStorage) and sent only to this gateway. ",
        "After ./dev run, the key is in var/dev-api-key.")),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    remember(tokenFrom(input.value));
    await render();
  });
  const page = [h("h1", { tabindex: "-1" }, "Sign in"), problem ? errorBox(problem) : null, form];
  clear(main()).append(...page.filter(Boolean));
  input.focus();
}

async function ensureSignedIn() {
  if (!token()) return false;
  if (session.principal) return true;
  try {
    session.principal = await get("/v1/keys/current");
    showSession();
    return true;
  } catch (error) {
    forget();
    const problem = error instanceof ApiError && error.status === 401
      ? Object.assign(error, { title: "This key was refused" })
      : error;
    signInPage(problem);
    return null;
  }
}

let rendering = 0;

export async function render({ focus = false } = {}) {
  const ticket = ++rendering;
  const { name, params } = route();
  markNav(name);
  const signedIn = await ensureSignedIn();
  if (signedIn === null || ticket !== rendering) return; // refused (sign-in shown), or superseded
  if (!signedIn) {
    signInPage(null);
    return;
  }
  const page = PAGES[name];
  document.title = `${page.title} · Notigate console`;
  const heading = h("h1", { tabindex: "-1" }, page.title);
  const body = h("div", { class: "page" }, loading());
  clear(main()).append(heading, body);
  // After a move between pages, the new page's heading takes the focus (screen readers announce
  // it); on a first load the focus stays at the top, where Tab reaches the skip link first.
  if (focus) heading.focus();
  try {
    await page.render(body, params, session.principal);
  } catch (error) {
    clear(body).append(errorBox(error));
  }
}

function takeLinkFromUrl() {
  // A console link: /console/#link=cl_... The token leaves the address bar at once.
  if (location.hash.startsWith("#link=")) {
    remember(tokenFrom(location.hash));
    session.principal = null;
    history.replaceState(null, "", `${location.pathname}#/why`);
  }
}

window.addEventListener("hashchange", () => {
  takeLinkFromUrl();
  render({ focus: true });
});
takeLinkFromUrl();
render();
