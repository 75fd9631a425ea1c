"""The token bucket shared through Redis: one Lua function, used by every limiter.

Producer quotas (`gateway.quota`) and provider rate limits (`gateway.providers.guard`) take
tokens the same way, so the logic lives here once, as Lua source other scripts embed:
`TAKE_FUNCTION` defines `take(key, rate, burst, want, now)`, which refills the bucket for
the time since it was last touched and either takes `want` tokens and returns 0, or takes
nothing and returns the seconds until one whole token is there. A take needs one whole
token but may take more than are left (a bulk request), driving the bucket below zero: the
key then waits until it has refilled, so the average rate holds. The bucket is a hash
(`tokens`, `at`) that expires once it would be full again, so an idle key costs nothing.

Clock: `now` comes from the caller, not from Redis's TIME, so tests can pin it and a
script stays deterministic. This assumes the processes sharing a bucket agree on the time
(NTP): a caller whose clock runs `s` seconds behind the last writer's refills nothing and
costs the bucket up to `s * rate` tokens; one running ahead is granted up to that many early.
With skew well under a second this is noise next to any rate worth limiting.
"""

from __future__ import annotations

TAKE_FUNCTION = """
local function take(key, rate, burst, want, now)
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + (now - at) * rate)
  if tokens < 1 then
    return (1 - tokens) / rate
  end
  tokens = tokens - want
  -- %.17g: tostring keeps 14 digits, which can round `at` past `now`, and a take at that
  -- same `now` (the next one of a batch) would then see time run backwards.
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', string.format('%.17g', now))
  redis.call('PEXPIRE', key, math.ceil((burst - tokens) / rate * 1000) + 1000)
  return 0
end
"""

TAKE_MANY = (
    TAKE_FUNCTION
    + """
-- KEYS: one bucket per take (a bucket may repeat: the takes run in order, each seeing the
-- ones before); ARGV[1] now (epoch seconds), then per take its rate (tokens/s), burst and
-- tokens wanted. Returns each take's wait in seconds as a string ('0' when taken): Lua
-- numbers become integers on the way out of a script.
local now = tonumber(ARGV[1])
local waits = {}
for i, key in ipairs(KEYS) do
  local n = 2 + (i - 1) * 3
  waits[i] = tostring(take(key, tonumber(ARGV[n]), tonumber(ARGV[n + 1]), tonumber(ARGV[n + 2]), now))
end
return waits
"""
)
