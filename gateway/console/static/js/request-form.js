// The dry-run request both "Why?" and "Preview" ask for: event, priority, recipient, clock, data.
// One state object, shared by the two pages, so a request explained can be previewed as is.

import { post } from "./api.js";
import { clear, errorBox, h, loading } from "./dom.js";
import { browserZone, isZone, knownZones, zonedToUtc } from "./zones.js";

const SAMPLE_USER = {
  user_id: "u_demo",
  timezone: "America/Los_Angeles",
  locale: "en",
  quiet_hours: { start: "22:00", end: "08:00" },
  contacts: {
    email: "ada@example.com",
    phone: "+14155550100",
    devices: [{ platform: "ios", token: "demo-device-token" }],
  },
  preferences: [{ event: "marketing.*", channel: "email", enabled: true }],
};

export const state = {
  event: null,
  priority: "normal",
  who: "adhoc", // "stored" | "adhoc"
  userId: "",
  userJson: JSON.stringify(SAMPLE_USER, null, 2),
  clock: "now", // "now" | "at"
  atLocal: "",
  atZone: browserZone(),
  dataJson: null, // null: the event's example data
  locale: "",
};

class FormProblem extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
    this.title = "Check the form";
    this.code = "invalid_form";
  }
}

function parseJson(text, field, what) {
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new FormProblem(field, `${what} must be a JSON object`);
    }
    return value;
  } catch (exc) {
    if (exc instanceof FormProblem) throw exc;
    throw new FormProblem(field, `${what} is not valid JSON: ${exc.message}`);
  }
}

/** The dry-run body, and the zone a person reads the result's times in. */
export function requestBody() {
  const intent = { event: state.event, priority: state.priority };
  const body = { intent };
  let zone = null;
  if (state.who === "stored") {
    if (!state.userId.trim()) throw new FormProblem("user_id", "give the id of a stored user");
    intent.user_id = state.userId.trim();
  } else {
    const user = parseJson(state.userJson, "user", "The user state");
    if (!user.user_id) throw new FormProblem("user.user_id", "the ad-hoc user needs a `user_id`");
    intent.user_id = user.user_id;
    body.user = user;
    zone = user.timezone || null;
  }
  intent.data = parseJson(state.dataJson ?? "{}", "data", "The data");
  if (state.locale) intent.locale = state.locale;
  if (state.clock === "at") {
    if (!state.atLocal) throw new FormProblem("at", "pick the local date and time to decide at");
    if (!isZone(state.atZone)) throw new FormProblem("at_zone", `${state.atZone} is not a known time zone`);
    body.at = zonedToUtc(state.atLocal, state.atZone);
    zone = zone || state.atZone;
  }
  return { body, zone };
}

function field(id, label, control, hint) {
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    control,
    hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null,
  );
}

function radio(name, value, label, current, onChange) {
  const id = `${name}-${value}`;
  return h(
    "span",
    { class: "choice" },
    h("input", {
      type: "radio", name, id, value, checked: current === value,
      on: { change: () => onChange(value) },
    }),
    h("label", { for: id }, label),
  );
}

/**
 * The form. `bundle` is GET /v1/policy/bundle; `withLocale` adds the locale picker (preview).
 * `onSubmit` gets nothing: it reads `requestBody()`.
 */
export function requestForm(bundle, { submitLabel, withLocale, onSubmit }) {
  const events = bundle.events;
  if (!state.event || !events.some((e) => e.name === state.event)) state.event = events[0]?.name ?? null;
  const example = () => events.find((e) => e.name === state.event)?.example ?? {};
  if (state.dataJson === null) state.dataJson = JSON.stringify(example(), null, 2);

  const dataBox = h("textarea", { id: "data-json", rows: "6", spellcheck: "false", "aria-describedby": "data-json-hint" });
  dataBox.value = state.dataJson;
  dataBox.addEventListener("input", () => { state.dataJson = dataBox.value; });

  const localeSelect = h("select", { id: "locale" });
  const fillLocales = () => {
    const info = events.find((e) => e.name === state.event);
    const options = [h("option", { value: "" }, "the user's (or the default)")];
    for (const locale of info?.locales ?? []) options.push(h("option", { value: locale }, locale));
    localeSelect.replaceChildren(...options);
    if (!(info?.locales ?? []).includes(state.locale)) state.locale = "";
    localeSelect.value = state.locale;
  };
  localeSelect.addEventListener("change", () => { state.locale = localeSelect.value; });
  fillLocales();

  const eventSelect = h(
    "select",
    { id: "event", on: { change: () => {
      state.event = eventSelect.value;
      state.dataJson = JSON.stringify(example(), null, 2);
      dataBox.value = state.dataJson;
      fillLocales();
    } } },
    events.map((e) => h("option", { value: e.name, selected: e.name === state.event }, e.category ? `${e.name} (${e.category})` : e.name)),
  );
  const prioritySelect = h(
    "select",
    { id: "priority", on: { change: () => { state.priority = prioritySelect.value; } } },
    bundle.priorities.map((p) => h("option", { value: p.name, selected: p.name === state.priority }, p.name)),
  );

  const userId = h("input", { id: "user-id", type: "text", value: state.userId, autocomplete: "off", placeholder: "u_123" });
  userId.addEventListener("input", () => { state.userId = userId.value; });
  const userJson = h("textarea", { id: "user-json", rows: "8", spellcheck: "false" });
  userJson.value = state.userJson;
  userJson.addEventListener("input", () => { state.userJson = userJson.value; });
  const storedBox = field("user-id", "Stored user id", userId, "Read with the stored preferences and history (admin keys).");
  const adhocBox = field("user-json", "Ad-hoc user state (JSON, as PUT /v1/users takes it)", userJson);
  const showWho = () => {
    storedBox.hidden = state.who !== "stored";
    adhocBox.hidden = state.who !== "adhoc";
  };

  const atLocal = h("input", { id: "at-local", type: "datetime-local", value: state.atLocal });
  atLocal.addEventListener("input", () => { state.atLocal = atLocal.value; });
  const atZone = h("input", { id: "at-zone", type: "text", list: "zones", value: state.atZone, autocomplete: "off" });
  atZone.addEventListener("input", () => { state.atZone = atZone.value.trim(); });
  const clockBox = h(
    "div",
    { class: "row" },
    field("at-local", "Local date and time", atLocal),
    field("at-zone", "Time zone", atZone),
    h("datalist", { id: "zones" }, knownZones().map((z) => h("option", { value: z }))),
  );
  const showClock = () => { clockBox.hidden = state.clock !== "at"; };

  const form = h(
    "form",
    { class: "card request", "aria-label": "Request", novalidate: true },
    h("div", { class: "row" },
      field("event", "Event", eventSelect),
      field("priority", "Priority", prioritySelect),
      withLocale ? field("locale", "Locale", localeSelect) : null),
    h("fieldset", {},
      h("legend", {}, "Recipient"),
      radio("who", "adhoc", "An ad-hoc user", state.who, (v) => { state.who = v; showWho(); }),
      radio("who", "stored", "A stored user", state.who, (v) => { state.who = v; showWho(); }),
      storedBox, adhocBox),
    h("fieldset", {},
      h("legend", {}, "Clock"),
      radio("clock", "now", "Now", state.clock, (v) => { state.clock = v; showClock(); }),
      radio("clock", "at", "At a given time", state.clock, (v) => { state.clock = v; showClock(); }),
      clockBox),
    field("data-json", "Data (JSON: the template variables)", dataBox, "Starts as the event's example data from its templates."),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, submitLabel)),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onSubmit();
  });
  showWho();
  showClock();
  return form;
}

/**
 * Post the form's request to `path` and draw the answer into `result` with `draw(answer,
 * request)`; a form problem or an API error is shown there instead.
 */
export async function submit(result, path, waiting, draw) {
  let request;
  try {
    request = requestBody();
  } catch (problem) {
    clear(result).append(errorBox(problem));
    return;
  }
  clear(result).append(loading(waiting));
  try {
    const answer = await post(path, request.body);
    clear(result).append(...draw(answer, request));
  } catch (error) {
    if (error.code === "template_error") error.title = "A template could not render";
    clear(result).append(errorBox(error));
  }
}
