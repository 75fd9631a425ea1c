// Building the page: every string from data becomes a text node (textContent), never markup.
// There is no innerHTML anywhere in the console; `h` is the only way elements are made.

/**
 * h("p", {class: "x", on: {click: fn}}, "text", child, [more, children])
 * Attributes are set with setAttribute (so an attribute value is never parsed as markup);
 * children that are strings or numbers become text nodes; null/false/undefined are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name === "value") {
      node.value = value;
    } else if (name === "checked" || name === "selected" || name === "disabled") {
      node[name] = Boolean(value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

/** A value from data shown as JSON text (never as markup). */
export function json(value) {
  return JSON.stringify(value, null, 2);
}

export function code(text) {
  return h("code", {}, text);
}

/** A <dl> of [term, definition] pairs; definitions may be nodes or text. Empty ones are left out. */
export function facts(pairs, cls = "facts") {
  return h(
    "dl",
    { class: cls },
    pairs
      .filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
}

/** A table that scrolls sideways on a narrow screen rather than squeezing its columns. */
export function table(caption, headers, rows) {
  return h(
    "div",
    { class: "table-wrap", role: "region", "aria-label": caption, tabindex: "0" },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))),
    ),
  );
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}`.trim() }, text);
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

/** An error from the API (or anywhere) shown as an alert people can read. */
export function errorBox(error) {
  const where = error.field ? ` (field: ${error.field})` : "";
  return h(
    "div",
    { class: "error", role: "alert" },
    h("strong", {}, error.title || "The gateway said no"),
    h("p", {}, `${error.message}${where}`),
    error.code ? h("p", { class: "muted" }, `code: ${error.code}`) : null,
  );
}

export function loading(text = "Loading…") {
  return h("p", { class: "muted", role: "status" }, text);
}

// --- time --------------------------------------------------------------------------

/** "2026-11-23 16:00 UTC" */
export function utc(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/** "Mon 23 Nov, 08:00 (America/Los_Angeles)": an instant as read in a zone. */
export function local(iso, zone) {
  if (!iso) return "—";
  const options = {
    weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
    hourCycle: "h23", timeZone: zone || undefined,
  };
  try {
    return `${new Intl.DateTimeFormat("en-GB", options).format(new Date(iso))} (${zone || "your time"})`;
  } catch {
    return utc(iso);
  }
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Number(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${Math.round(s * 10) / 10} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 360) / 10} h`;
  return `${Math.round(s / 8640) / 10} d`;
}

export function money(value) {
  if (value === null || value === undefined) return "—";
  return `$${parseFloat(Number(value).toFixed(4))}`;
}

/** A link to a place in the policy bundle: the policy page shows the file at that line. */
export function whereLink(file, line) {
  if (!file) return "—";
  const text = line ? `${file}:${line}` : file;
  const query = new URLSearchParams({ path: file });
  if (line) query.set("line", String(line));
  return h("a", { href: `#/policy/file?${query}`, class: "where" }, text);
}
