// Activity: a notification by id, or a user's recent ones, each delivery as a timeline.

import { get, post } from "../api.js";
import { badge, clear, errorBox, facts, h, loading, local, section, table, utc } from "../dom.js";

const STATUS_KIND = {
  delivered: "good", suppressed: "", standby: "", cancelled: "",
  failed: "bad", dead: "bad", expired: "bad",
  pending: "warn", scheduled: "warn", sending: "warn", retrying: "warn", unknown: "warn",
};

export async function activityPage(root, params, principal) {
  const result = h("div", { class: "result", "aria-live": "polite" });
  const idInput = h("input", { id: "notification-id", type: "text", autocomplete: "off", placeholder: "n_...", value: params.get("id") || "" });
  const userInput = h("input", { id: "activity-user", type: "text", autocomplete: "off", placeholder: "u_...", value: params.get("user") || "" });
  const byId = h("form", { class: "card inline", "aria-label": "Find a notification" },
    h("div", { class: "field" }, h("label", { for: "notification-id" }, "Notification id"), idInput),
    h("button", { type: "submit", class: "primary" }, "Find"));
  const byUser = h("form", { class: "card inline", "aria-label": "A user's recent notifications" },
    h("div", { class: "field" }, h("label", { for: "activity-user" }, "User id"), userInput),
    h("button", { type: "submit" }, "Recent notifications"));
  byId.addEventListener("submit", (e) => { e.preventDefault(); location.hash = `#/activity?${new URLSearchParams({ id: idInput.value.trim() })}`; });
  byUser.addEventListener("submit", (e) => { e.preventDefault(); location.hash = `#/activity?${new URLSearchParams({ user: userInput.value.trim() })}`; });
  clear(root).append(h("div", { class: "row" }, byId, byUser), result);
  if (params.get("id")) await showTimeline(result, params.get("id"), principal);
  else if (params.get("user")) await showRecent(result, params.get("user"));
}

async function showRecent(result, userId) {
  clear(result).append(loading());
  try {
    const page = await get(`/v1/users/${encodeURIComponent(userId)}/notifications?limit=50`);
    if (!page.notifications.length) {
      clear(result).append(h("p", {}, `No notifications for ${userId} that this key may see.`));
      return;
    }
    clear(result).append(section(`Recent notifications of ${userId}`, table("Recent notifications",
      ["accepted", "event", "priority", "channels", ""],
      page.notifications.map((n) => [
        utc(n.created_at), n.event, n.priority,
        h("span", {}, n.deliveries.map((d) => [badge(`${d.channel}: ${d.status}`, STATUS_KIND[d.status] ?? ""), " "])),
        h("a", { href: `#/activity?${new URLSearchParams({ id: n.notification_id })}` }, `Open ${n.notification_id}`),
      ]))));
  } catch (error) {
    clear(result).append(errorBox(error));
  }
}

async function showTimeline(result, id, principal) {
  clear(result).append(loading());
  try {
    const story = await get(`/v1/notifications/${encodeURIComponent(id)}/timeline`);
    clear(result).append(...timelineView(story, principal, () => showTimeline(result, id, principal)));
  } catch (error) {
    clear(result).append(errorBox(error));
  }
}

function timelineView(story, principal, refresh) {
  const n = story.notification;
  const head = section(
    `Notification ${n.notification_id}`,
    facts([
      ["Event", `${n.event} (${n.priority})`],
      ["User", h("a", { href: `#/activity?${new URLSearchParams({ user: n.user_id })}` }, n.user_id)],
      ["Accepted", `${utc(n.created_at)} · ${local(n.created_at)}`],
      ["Category / tier", `${n.category ?? "—"} / ${n.tier ?? "—"}`],
      ["Rule", n.rule],
      ["Fallback", n.fallback.length ? n.fallback.join(" → ") : null],
      ["Policy version", n.policy_version],
      ["Decision", n.status === "undecided" ? "waiting for Redis to decide" : "decided at intake"],
    ]),
  );
  return [head, ...story.deliveries.map((d) => deliveryView(d, principal, refresh))];
}

function deliveryView(d, principal, refresh) {
  const replay = d.dead_letter && !d.dead_letter.replayed_at && principal.admin ? replayButton(d.dead_letter, refresh) : null;
  return h(
    "section",
    { class: "card delivery", "aria-label": `${d.channel} delivery` },
    h("h2", {}, d.channel, " ", badge(d.status, STATUS_KIND[d.status] ?? ""), d.provider ? h("span", { class: "muted" }, ` via ${d.provider}`) : null),
    h("p", { class: "muted" }, `delivery ${d.delivery_id}`),
    h("ol", { class: "timeline" }, d.entries.map((e) => h(
      "li",
      { class: `entry ${e.kind}` },
      h("time", { datetime: e.at || "" }, e.at ? utc(e.at) : "—"),
      " ",
      h("span", { class: "kind" }, e.kind.replace("_", " ")),
      " ",
      h("span", {}, e.summary),
      e.detail ? h("p", { class: "detail" }, e.detail) : null,
    ))),
    replay,
  );
}

function replayButton(letter, refresh) {
  const status = h("p", { role: "status", class: "muted" });
  const button = h("button", {
    type: "button",
    on: { click: async () => {
      button.disabled = true;
      try {
        const answer = await post(`/v1/dead-letters/${encodeURIComponent(letter.dead_letter_id)}/replay`);
        status.textContent = `Replayed as delivery ${answer.delivery_id}.`;
        await refresh();
      } catch (error) {
        status.replaceChildren(errorBox(error));
        button.disabled = false;
      }
    } },
  }, `Replay dead letter ${letter.dead_letter_id}`);
  return h("div", { class: "actions" }, button, status);
}
