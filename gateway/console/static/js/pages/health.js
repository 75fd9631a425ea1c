// Health: queues per tier, provider breakers, the policy in force (GET /v1/status).

import { get } from "../api.js";
import { badge, clear, code, duration, facts, h, json, section, table, utc } from "../dom.js";

const STATE_KIND = { closed: "good", half_open: "warn", open: "bad" };

export async function healthPage(root) {
  const refresh = h("button", { type: "button", on: { click: () => healthPage(root) } }, "Refresh");
  const [status, policy] = await Promise.all([get("/v1/status"), get("/v1/policy")]);
  const reload = Object.entries(policy).filter(([k]) => !["rules", "files", "channels", "tiers"].includes(k));
  clear(root).append(
    h("div", { class: "actions" }, refresh, h("span", { class: "muted" }, ` as of ${utc(status.at)}`)),
    section("Redis", h("p", {}, badge(status.redis.ok ? "answering" : "not answering", status.redis.ok ? "good" : "bad"), ` ${status.redis.detail}`)),
    section("Queues", status.queues.length
      ? table("Queues", ["queue", "tiers", "waiting", "due now", "oldest due for", "next due in"],
        status.queues.map((q) => [q.queue, q.tiers.join(", "), String(q.depth), String(q.due),
          duration(q.oldest_due_age_seconds), duration(q.next_due_in_seconds)]))
      : h("p", {}, "No queue figures (Redis did not answer).")),
    section("Providers", status.providers.length
      ? table("Providers", ["provider", "channel", "breaker", "calls in window", "failures", "failure rate", "opens at", "open until"],
        status.providers.map((p) => [p.provider, p.channel,
          p.guarded ? badge(p.state.replace("_", "-"), STATE_KIND[p.state]) : h("span", { class: "muted" }, "no breaker"),
          p.guarded ? String(p.calls) : "—", p.guarded ? String(p.failures) : "—",
          p.failure_rate === null ? "—" : `${Math.round(p.failure_rate * 100)}%`,
          p.threshold === null ? "—" : `${Math.round(p.threshold * 100)}% of ≥ ${p.min_calls} in ${duration(p.window_seconds)}`,
          p.open_until ? utc(p.open_until) : "—"]))
      : h("p", {}, "No provider figures (Redis did not answer).")),
    section("Policy", facts([
      ["Version", code(status.policy.version)],
      ["CEL runtime", status.policy.cel_runtime],
      ...reload.filter(([k]) => !["version", "cel_runtime"].includes(k)).map(([k, v]) => [k.replaceAll("_", " "), typeof v === "string" ? v : json(v)]),
    ])),
  );
}
