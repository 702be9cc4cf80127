-- wrk script: tracking hits with varied paths, user agents and client addresses.
--
-- BENCH_PATHS, BENCH_AGENTS and BENCH_ADDRESSES name files with one value a line.
-- Requests are built once per thread and then cycled, so that wrk spends its time
-- on the socket, not in Lua. done() prints one JSON line that bench/run.py reads.

local function lines(name)
  local values = {}
  for line in io.lines(os.getenv(name)) do
    if line ~= "" then
      values[#values + 1] = line
    end
  end
  return values
end

local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local prepared = {}
local next_index = 1
sent = 0

function init(args)
  local paths = lines("BENCH_PATHS")
  local agents = lines("BENCH_AGENTS")
  local addresses = lines("BENCH_ADDRESSES")
  local count = math.max(#paths, #agents, #addresses, 512)
  local offset = (id or 1) * 7919
  for i = 1, count do
    local k = i + offset
    prepared[i] = wrk.format("GET", paths[k % #paths + 1], {
      ["User-Agent"] = agents[k % #agents + 1],
      ["X-Forwarded-For"] = addresses[(k * 31) % #addresses + 1],
      ["Accept"] = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
    })
  end
end

-- BENCH_RATE paces the load: requests a second over all of wrk's BENCH_THREADS
-- threads. Each thread keeps a timetable of its own and every request takes the next
-- slot of it, whichever connection sends it; a request late for its slot goes at
-- once. A connection's own pause would be lengthened by the answer's time.
local rate = tonumber(os.getenv("BENCH_RATE") or "") or 0
if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock, bench_timespec *now);
  ]])
  local clock = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
    return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
  end
  local period = 1000 * (tonumber(os.getenv("BENCH_THREADS") or "") or 1) / rate
  local slot = nil
  function delay()
    local now = now_ms()
    slot = (slot or now) + period
    if slot < now - 100 then
      slot = now -- far behind: do not burst to catch up
    end
    return math.max(0, math.floor(slot - now))
  end
end

function request()
  sent = sent + 1
  local value = prepared[next_index]
  next_index = next_index % #prepared + 1
  return value
end

function done(summary, latency, requests)
  local total_sent = 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"sent":%d,"duration_us":%d,"status_errors":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, total_sent, summary.duration, errors.status,
    errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
