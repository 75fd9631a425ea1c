// The policy bundle in force (GET /v1/policy/bundle), fetched once per version seen.

import { get } from "./api.js";

let cached = null;

export async function bundle() {
  if (cached === null) cached = await get("/v1/policy/bundle");
  return cached;
}

/** Where a rule was written, by name: for links from a decision to the policy file. */
export function ruleWhere(view, name) {
  for (const category of view.categories) {
    const rule = category.rules.find((r) => r.name === name);
    if (rule) return rule.where;
  }
  return null;
}

export function forgetBundle() {
  cached = null;
}
