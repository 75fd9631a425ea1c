// Preview: each channel's message as it would arrive, rendered by the gateway's own templates.

import { bundle } from "../bundle.js";
import { badge, clear, facts, h, json, section, whereLink } from "../dom.js";
import { requestForm, submit } from "../request-form.js";

const PUSH_LIMIT = 4096;

export async function previewPage(root) {
  const view = await bundle();
  const result = h("div", { class: "result", "aria-live": "polite" });
  const form = requestForm(view, {
    submitLabel: "Preview",
    withLocale: true,
    onSubmit: () => submit(result, "/v1/templates/preview", "Rendering…", previewView),
  });
  clear(root).append(
    h("p", { class: "lede" }, "The messages each channel would carry, per locale, rendered exactly as a worker would. Nothing is sent."),
    form,
    result,
  );
}

function previewView(preview) {
  const cards = preview.messages.map((m) => section(
    `${m.channel}${m.standby ? " (standby)" : ""}`,
    h("p", { class: "muted" }, "Template ", whereLink(m.file), m.locale ? ` · locale ${m.locale}` : " · default locale"),
    renderers[m.channel]?.(m) ?? h("pre", {}, json(m.fields)),
  ));
  const suppressed = preview.suppressed.length
    ? section("Not sent", h("ul", {}, preview.suppressed.map((s) => h("li", {}, badge(s.channel), ` ${s.reason}: ${s.detail}`))))
    : null;
  return [h("div", { class: "previews" }, cards), suppressed].filter(Boolean);
}

const renderers = {
  email(m) {
    const f = m.fields;
    const frame = h("iframe", {
      class: "email-frame",
      title: `Email HTML: ${f.subject || "no subject"}`,
      sandbox: "", // no scripts, no forms, no navigation, an opaque origin
      referrerpolicy: "no-referrer",
    });
    frame.srcdoc = f.html || "<p>(no HTML part)</p>";
    return h("div", { class: "email" },
      facts([["Subject", f.subject], ["Preheader", f.preheader]]),
      f.html ? frame : h("p", { class: "muted" }, "No HTML part: clients show the text."),
      h("details", { open: !f.html }, h("summary", {}, "Text part"), h("pre", { class: "text-part" }, f.text || "(none)")));
  },
  push(m) {
    const f = m.fields;
    const size = m.payload_bytes ?? 0;
    return h("div", { class: "push" },
      h("div", { class: "lockscreen", role: "img", "aria-label": `Push notification: ${f.title || ""} ${f.body || ""}` },
        h("div", { class: "notification" },
          h("div", { class: "app" }, "NOTIGATE · now"),
          h("div", { class: "title" }, f.title || ""),
          h("div", { class: "body" }, f.body || ""))),
      h("p", {}, `Payload: ${size} of ${PUSH_LIMIT} bytes `, badge(size > PUSH_LIMIT ? "too large" : "fits", size > PUSH_LIMIT ? "bad" : "good")),
      f.data ? h("details", {}, h("summary", {}, "Data"), h("pre", {}, json(f.data))) : null);
  },
  sms(m) {
    const sms = m.sms || {};
    return h("div", { class: "sms" },
      h("div", { class: "bubble" }, m.fields.body || ""),
      h("p", {}, `${sms.segments} segment${sms.segments === 1 ? "" : "s"} · ${sms.encoding} · ${sms.units} ${sms.encoding === "GSM-7" ? "septets" : "UTF-16 units"}`));
  },
  in_app(m) {
    const f = m.fields;
    return h("div", { class: "inapp" },
      h("div", { class: "title" }, f.title || ""),
      h("p", {}, f.body || ""),
      f.action_url ? h("p", { class: "muted" }, `Opens ${f.action_url}`) : null);
  },
};
