// Policy: the bundle in force, as the compiler understood it, every element linked to its line.

import { get } from "../api.js";
import { bundle } from "../bundle.js";
import { badge, clear, code, duration, facts, h, json, money, section, table, whereLink } from "../dom.js";

// Fields of GET /v1/policy shown as they are (the loaded version, reload times, ...);
// the rest of that answer is drawn from the bundle view below.
const DRAWN_ELSEWHERE = new Set(["rules", "files", "channels", "tiers", "version", "cel_runtime"]);

export async function policyPage(root) {
  const [summary, view] = await Promise.all([get("/v1/policy"), bundle()]);
  const loaded = Object.entries(summary).filter(([k]) => !DRAWN_ELSEWHERE.has(k));
  const list = (items) => (items && items.length ? items.join(", ") : "—");
  clear(root).append(
    section(
      "Bundle in force",
      facts([
        ["Version", code(view.version)],
        ["CEL runtime", view.cel_runtime],
        ...loaded.map(([k, v]) => [k.replaceAll("_", " "), typeof v === "string" ? v : json(v)]),
        ["Default time zone", view.defaults.timezone],
        ["Default quiet hours", h("span", {}, `${view.defaults.quiet_hours.start}–${view.defaults.quiet_hours.end} `, whereLink(view.defaults.where.file, view.defaults.where.line))],
        ["Idempotency window", duration(view.defaults.idempotency_window_seconds)],
      ]),
    ),
    section("Priorities", table("Priorities", ["priority", "strategy", "fallback chain", "bypasses", "where"],
      view.priorities.map((p) => [p.name, p.strategy, list(p.fallback), list(p.bypass), whereLink(p.where.file, p.where.line)]))),
    section("Tiers", table("Tiers", ["tier", "queue", "latency target", "expiry", "cost ceiling", "retries", "job size", "where"],
      view.tiers.map((t) => [t.name, t.queue, duration(t.latency_target_seconds), duration(t.expiry_seconds),
        t.cost_ceiling === null ? "none" : money(t.cost_ceiling),
        `${t.retry.max_attempts} attempts: ${t.retry.schedule_seconds.map(duration).join(", ")}`,
        String(t.chunk_size), whereLink(t.where.file, t.where.line)]))),
    section("Channels", table("Channels", ["channel", "address", "opt-in", "held by quiet hours", "providers"],
      view.channels.map((c) => [c.name, c.address, c.opt_in ? "yes" : "no", c.quiet_hours ? "yes" : "no", list(view.routes[c.name])]))),
    section("Caps across categories", capsTable(view.caps)),
    view.constraints.length ? section("Constraints", table("Constraints", ["name", "scope", "denies", "reason", "condition", "where"],
      view.constraints.map((c) => [c.name, scope(c), list(c.deny), `${c.reason}: ${c.detail}`, c.condition ? code(c.condition.source) : "—", whereLink(c.where.file, c.where.line)]))) : null,
    ...view.categories.map(categoryView),
    section("Recurring schedules", view.schedules.length ? table("Schedules", ["schedule", "cron (user's zone)", "event", "priority", "segment", "where"],
      view.schedules.map((s) => [s.name, code(s.cron), s.event, s.priority, code(s.segment), whereLink(s.where.file, s.where.line)])) : h("p", {}, "None.")),
    section("Providers", table("Providers", ["provider", "channel", "adapter", "cost", "where"],
      view.providers.map((p) => [p.name, p.channel, p.adapter, money(p.cost), whereLink(p.where.file, p.where.line)]))),
    section("Files", h("ul", { class: "files" }, view.files.map((f) => h("li", {}, whereLink(f.path), ` ${f.kind}`)))),
  );
}

function scope(item) {
  const parts = [];
  if (item.category) parts.push(`category ${item.category}`);
  if (item.events) parts.push(`events ${item.events.join(", ")}`);
  if (item.priorities) parts.push(`priorities ${item.priorities.join(", ")}`);
  return parts.join("; ") || "everything";
}

function capsTable(caps) {
  if (!caps.length) return h("p", {}, "None.");
  return table("Caps", ["cap", "channels", "events", "limit", "over", "where"],
    caps.map((c) => [c.name, c.channels ? c.channels.join(", ") : "all", c.events ? c.events.join(", ") : "all",
      `${c.limit} per ${duration(c.window_seconds)}`, c.overflow, whereLink(c.where.file, c.where.line)]));
}

function categoryView(category) {
  return section(
    `Category ${category.name}`,
    h("p", { class: "muted" }, "Rules in precedence order: for an event several rules name, the first that matches wins."),
    h("ol", { class: "rules" }, category.rules.map(ruleView)),
    category.caps.length ? h("div", {}, h("h3", {}, "Caps"), capsTable(category.caps)) : null,
  );
}

function ruleView(rule) {
  const tiers = Object.entries(rule.tiers).map(([p, t]) => `${p} → ${t}`).join(", ");
  const at = (name) => rule.settings[name];
  const located = (name, value) => (at(name) ? h("span", {}, value, " ", whereLink(at(name).file, at(name).line)) : value);
  return h(
    "li",
    { class: "rule" },
    h("h3", {}, rule.name, " ", whereLink(rule.where.file, rule.where.line)),
    rule.description ? h("p", {}, rule.description) : null,
    facts([
      ["Matches", rule.events.join(", ")],
      ["Priorities", rule.priorities ? rule.priorities.join(", ") : "any"],
      ["Condition", rule.condition ? h("span", {}, code(rule.condition.source), " ", whereLink(rule.condition.where.file, rule.condition.where.line)) : null],
      ["Channels", located("channels", rule.channels.join(", "))],
      ["Tiers", located("tier", tiers)],
      ["Muted", rule.mute.length ? located("mute", rule.mute.join(", ")) : null],
      ["Bypasses", rule.bypass.length ? rule.bypass.join(", ") : null],
      ["Strategy", rule.strategy],
      ["Fallback", rule.fallback ? rule.fallback.join(" → ") : null],
      ["Quiet hours", rule.quiet_hours ? "apply" : badge("ignored", "warn")],
      ["Dedup window", rule.dedup_seconds ? duration(rule.dedup_seconds) : null],
      ["Batching", rule.batch ? h("span", {}, `${duration(rule.batch.window_seconds)} window, at most ${rule.batch.max_size}, by ${rule.batch.by} `, whereLink(rule.batch.where.file, rule.batch.where.line)) : null],
      ["Delivery window", rule.delivery_window ? `${rule.delivery_window.days.join(" ")} ${rule.delivery_window.start}–${rule.delivery_window.end}` : null],
      ["Template", rule.template],
      ["Digest", rule.digest],
      ["Providers", Object.keys(rule.providers).length ? Object.entries(rule.providers).map(([c, p]) => `${c}: ${p.join(" → ")}`).join("; ") : null],
    ]),
  );
}

/** One file of the bundle, with line numbers; `line` is highlighted and scrolled to. */
export async function filePage(root, params) {
  const path = params.get("path") || "";
  const line = Number(params.get("line") || 0);
  const file = await get(`/v1/policy/file?${new URLSearchParams({ path })}`);
  const lines = file.text.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  const list = h("ol", { class: "source", "aria-label": `${file.path}, ${lines.length} lines` },
    lines.map((text, i) => h("li", { id: `L${i + 1}`, class: i + 1 === line ? "hit" : null, "aria-current": i + 1 === line ? "true" : null },
      h("code", {}, text || " "))));
  clear(root).append(
    h("p", {}, h("a", { href: "#/policy" }, "← Back to the policy"), " · ", code(file.path), line ? ` · line ${line}` : ""),
    h("div", { class: "card source-wrap", tabindex: "0", role: "region", "aria-label": "File text" }, list),
  );
  if (line) root.querySelector(`#L${line}`)?.scrollIntoView({ block: "center" });
}
