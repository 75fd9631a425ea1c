// "Why did (or would) this happen?": a dry run, drawn as one lane per channel, then the trace.

import { curl } from "../api.js";
import { bundle, ruleWhere } from "../bundle.js";
import {
  badge, clear, code, facts, h, json, local, money, section, utc, whereLink,
} from "../dom.js";
import { requestForm, submit } from "../request-form.js";

const DEFERRED = {
  quiet_hours: "the user's quiet hours",
  batched: "it waits for its batch window to close",
  scheduled: "the intent's send_at",
  delivery_window: "the rule's delivery window",
};

export async function whyPage(root, _params, _principal) {
  const view = await bundle();
  const result = h("div", { class: "result", "aria-live": "polite" });
  const draw = (decision, request) => decisionView(view, decision, request);
  const form = requestForm(view, {
    submitLabel: "Explain",
    withLocale: false,
    onSubmit: () => submit(result, "/v1/dry-run", "Deciding…", draw),
  });
  clear(root).append(
    h("p", { class: "lede" },
      "Pick an event and a recipient and see what the gateway would decide, channel by channel, ",
      "with every step of the policy that decided it. Nothing is sent, stored or counted."),
    form,
    result,
  );
}

export function decisionView(view, decision, request) {
  const zone = request.zone;
  const where = ruleWhere(view, decision.rule);
  const summary = section(
    "Decision",
    facts([
      ["Event", `${decision.event} (${decision.priority})`],
      ["Category", decision.category],
      ["Rule", where ? h("span", {}, `${decision.rule} `, whereLink(where.file, where.line)) : decision.rule],
      ["Tier", decision.tier],
      ["Decided at", zone ? `${local(decision.evaluated_at, zone)} · ${utc(decision.evaluated_at)}` : utc(decision.evaluated_at)],
      ["Estimated cost", money(decision.estimated_cost)],
      ["Policy version", decision.policy_version],
    ]),
  );
  const lanes = section("Channels", h("div", { class: "lanes" }, laneOrder(view, decision).map((c) => lane(decision, c, zone))));
  const chain = section(
    "Fallback",
    h("p", {}, "Chain: ", decision.fallback.length ? chainView(decision.fallback) : "none"),
    decision.standby.length
      ? h("p", {}, "On standby (sent only if the channels before them fail): ", decision.standby.map((d) => d.channel).join(", "))
      : h("p", { class: "muted" }, "No channel on standby."),
  );
  return [summary, lanes, chain, traceView(decision.trace), copyView(request.body)];
}

function chainView(channels) {
  return h("span", { class: "chain" }, channels.map((c, i) => [i ? h("span", { "aria-hidden": "true" }, " → ") : null, code(c)]));
}

function laneOrder(view, decision) {
  const seen = [];
  const add = (c) => { if (!seen.includes(c)) seen.push(c); };
  for (const category of view.categories) {
    const rule = category.rules.find((r) => r.name === decision.rule);
    if (rule) rule.channels.forEach(add);
  }
  decision.deliveries.forEach((d) => add(d.channel));
  decision.standby.forEach((d) => add(d.channel));
  decision.suppressed.forEach((s) => add(s.channel));
  return seen.filter((c) => [...decision.deliveries, ...decision.standby, ...decision.suppressed].some((x) => x.channel === c));
}

function lane(decision, channel, zone) {
  const delivery = decision.deliveries.find((d) => d.channel === channel);
  const standby = decision.standby.find((d) => d.channel === channel);
  const suppressed = decision.suppressed.find((s) => s.channel === channel);
  const steps = decision.trace.filter((t) => t.channel === channel);
  let state;
  let body;
  if (suppressed) {
    state = badge(`suppressed: ${suppressed.reason}`, "bad");
    body = [
      h("p", {}, suppressed.detail),
      facts([["Rule", suppressed.rule], ["Folded into digest", suppressed.digest]]),
    ];
  } else {
    const d = delivery || standby;
    const when = d.send_at
      ? h("p", { class: "when" },
          h("strong", {}, d.batch ? "Batched until " : "Deferred until "),
          zone ? local(d.send_at, zone) : utc(d.send_at),
          zone ? h("span", { class: "muted" }, ` · ${utc(d.send_at)}`) : null,
          d.deferred ? h("span", {}, ` — because of ${DEFERRED[d.deferred] || d.deferred}`) : null)
      : h("p", { class: "when" }, h("strong", {}, standby ? "On standby" : "Sends now"));
    state = standby
      ? badge("standby", "warn")
      : d.batch ? badge("batched", "warn") : d.send_at ? badge(`deferred: ${d.deferred || "scheduled"}`, "warn") : badge("now", "good");
    body = [
      when,
      d.batch ? h("p", {}, `Batch ${d.batch.key}: ${d.batch.size} of ${d.batch.max_size} in a ${d.batch.window_seconds}s window`) : null,
      facts([
        ["Rule", d.rule],
        ["Providers", d.providers.length ? chainView(d.providers) : "none"],
        ["Tier / queue", `${d.tier} / ${d.queue}`],
        ["Template", d.template],
        ["Recipients", String(d.recipients)],
        ["Estimated cost", money(d.estimated_cost)],
        ["Expires", utc(d.expires_at)],
      ]),
    ];
  }
  return h(
    "article",
    { class: "lane", "aria-label": `${channel} lane` },
    h("h3", {}, channel, " ", state),
    ...body,
    steps.length
      ? h("ol", { class: "lane-steps" }, steps.map((t) => h("li", {}, h("span", { class: "step" }, t.step), " ", t.detail || json(t.value), " ", whereLink(t.file, t.line))))
      : null,
  );
}

function traceView(trace) {
  const rows = trace.map((t, i) => h(
    "li",
    { class: "trace-step" },
    h("div", { class: "trace-head" },
      h("span", { class: "num" }, String(i + 1)),
      h("span", { class: "step" }, t.step),
      t.channel ? badge(t.channel) : null,
      t.rule ? h("span", { class: "muted" }, ` rule ${t.rule}`) : null,
      " ",
      whereLink(t.file, t.line)),
    t.expr ? h("pre", { class: "expr" }, h("code", {}, t.expr)) : null,
    h("p", {}, h("span", { class: "muted" }, "value: "), code(json(t.value))),
    t.detail ? h("p", {}, t.detail) : null,
  ));
  return section("Trace, step by step", h("ol", { class: "trace" }, rows));
}

function copyView(body) {
  const curlText = curl("POST", "/v1/dry-run", body);
  const explainText = `${JSON.stringify(body, null, 2)}\n`;
  const status = h("p", { class: "muted", role: "status" });
  const copier = (label, text) => h("button", {
    type: "button",
    on: { click: async () => {
      try {
        await navigator.clipboard.writeText(text);
        status.textContent = `${label} copied.`;
      } catch {
        status.textContent = `Could not reach the clipboard: copy ${label} from the box below.`;
      }
    } },
  }, `Copy ${label}`);
  return section(
    "Take it elsewhere",
    h("div", { class: "actions" },
      copier("as curl", curlText),
      copier("as a notigate explain file", explainText)),
    status,
    h("details", {}, h("summary", {}, "curl"), h("pre", {}, curlText)),
    h("details", {}, h("summary", {}, "explain file (save as request.json, run notigate explain request.json)"), h("pre", {}, explainText)),
  );
}
