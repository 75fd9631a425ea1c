-- wrk script of the Notigate HTTP benchmark (bench/generators.py runs it):
--   wrk ... http://127.0.0.1:PORT/PATH -s bench/wrk_post.lua -- BODIES_FILE [STATUS [HEADER...]]
-- POSTs the bodies of BODIES_FILE (one JSON document per line) in turn over keep-alive
-- connections, with each "Name: value" HEADER, counts every response whose status is not
-- exactly STATUS (default 200; wrk itself only counts status > 399), and prints one JSON
-- line prefixed with WRK_JSON for the bench to parse.

local requests = {}
local next_request = 1
local expected = 200
unexpected = 0 -- global: read from each thread by done() through thread:get

function init(args)
  expected = tonumber(args[2] or "200")
  local headers = { ["Content-Type"] = "application/json" }
  for i = 3, #args do
    local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
    assert(name, "a header must read 'Name: value', not " .. args[i])
    headers[name] = value
  end
  for line in io.lines(args[1]) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", wrk.path, headers, line)
    end
  end
  assert(#requests > 0, "no request bodies in " .. args[1])
  -- threads start at different bodies, like the built-in generator's connections
  next_request = math.random(#requests)
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end

function response(status, headers, body)
  if status ~= expected then
    unexpected = unexpected + 1
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, _)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("unexpected")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "unexpected": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d, "mean_us": %.1f, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(99)))
end
