// Wall-clock time in an IANA zone to an instant, with the browser's own zone data (Intl).

/** The zone's offset from UTC, in minutes, at the instant `ms`. */
function offsetAt(ms, zone) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(new Date(ms));
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  const asUtc = Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second"));
  return Math.round((asUtc - Math.floor(ms / 1000) * 1000) / 60000);
}

/**
 * "2026-11-21T23:30" read in `zone` -> "2026-11-22T07:30:00Z". A wall time that falls in a
 * daylight-saving gap moves forward by the gap, as the engine's own arithmetic does.
 */
export function zonedToUtc(localValue, zone) {
  const [date, time] = localValue.split("T");
  const [y, mo, d] = date.split("-").map(Number);
  const [hh, mm] = (time || "00:00").split(":").map(Number);
  const wall = Date.UTC(y, mo - 1, d, hh, mm);
  const first = wall - offsetAt(wall, zone) * 60000;
  const second = wall - offsetAt(first, zone) * 60000; // settles a guess made across a change
  // `second` reads back as the wall time unless that time does not exist (a spring-forward
  // gap); then the later guess is the first instant after the gap plus the time into it.
  const exists = wall - offsetAt(second, zone) * 60000 === second;
  const instant = exists ? second : Math.max(first, second);
  return new Date(instant).toISOString().replace(".000Z", "Z");
}

export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

export function knownZones() {
  try {
    return Intl.supportedValuesOf("timeZone");
  } catch {
    return ["UTC", "Europe/London", "Europe/Paris", "America/New_York", "America/Los_Angeles", "Asia/Tokyo"];
  }
}

export function isZone(zone) {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}
