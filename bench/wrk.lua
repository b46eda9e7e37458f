-- One bench case for wrk: the request comes from the environment (set by bench/run.py), and done() prints
-- one line "BENCH_JSON {...}" with throughput, latency percentiles, socket errors and a count per status.
-- "quantiles_us" is the latency at a grid of percentiles, finer at the top: run.py pools the turns of a case
-- from it.
--   BENCH_METHOD, BENCH_BODY, BENCH_CONTENT_TYPE, BENCH_KEY (X-Processing-Key),
--   BENCH_SIGNATURE (X-Processing-Signature), BENCH_COOKIE (Cookie)

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
  wrk.body = body
end
local function header(variable, name)
  local value = os.getenv(variable)
  if value and value ~= "" then
    wrk.headers[name] = value
  end
end
header("BENCH_CONTENT_TYPE", "Content-Type")
header("BENCH_KEY", "X-Processing-Key")
header("BENCH_SIGNATURE", "X-Processing-Signature")
header("BENCH_COOKIE", "Cookie")

-- Each wrk thread has its own Lua state: count statuses there, gather them in done().
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local grid = {}
  for p = 1, 97 do table.insert(grid, p) end
  for p = 97.5, 98.5, 0.5 do table.insert(grid, p) end
  for p = 99.0, 99.85, 0.1 do table.insert(grid, p) end
  for _, p in ipairs({99.95, 99.99, 100}) do table.insert(grid, p) end
  local quantiles = {}
  for _, p in ipairs(grid) do
    table.insert(quantiles, string.format("[%g, %d]", p, latency:percentile(p)))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "mean": %.1f, "max": %d}, ' ..
    '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"wrk_status_errors": %d, "statuses": {%s}, "quantiles_us": [%s]}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
    errors.connect, errors.read, errors.write, errors.timeout, errors.status,
    table.concat(parts, ", "), table.concat(quantiles, ", ")))
end
