-- shardpay transfer load for wrk (Debian's wrk 4.1, built with LuaJIT). Loaded by uniform.lua, hot.lua and
-- retry.lua, which set REPLAY (the share of requests that resend an earlier key with the same body) and then
-- dofile() this file. A scenario may also set, before its dofile(): PATH (the route POSTed, default
-- /v1/transfers), make_body(ids, nids) (a fresh request's body; default a transfer between two random wallets of
-- the ids file), scenario_init(args) (run by each thread's init() after the ids are read, with wrk's script
-- arguments; payments.lua reads its pm_ tokens there), scenario_response(status, body) (run on every answer) and
-- scenario_report(threads) (in done(): more "name":value, fields for the report, each followed by a comma).
--
--   SHARDPAY_BENCH_KEY=sk_... wrk -t1 -c64 -d30s -s loadtest/wrk/uniform.lua http://127.0.0.1:8300 \
--       -- <ids file: one wallet id a line> <idempotency key prefix>
--
-- Every request is POST /v1/transfers from a random wallet of the file to another one, 1..100 cents, with a
-- unique Idempotency-Key "<prefix>-<thread>-<n>" (or, for a replay, an earlier key with its earlier body).
--
-- Latency over time: wrk gives Lua no per-request latency, so each request carries
-- X-Request-Id "<thread>.<n>.<send time in µs>", which the gateway echoes (API.md); response() takes the
-- difference and files it in a per-second histogram (2% buckets). done() prints one line "BENCH_JSON {...}" on
-- stdout: wrk's summary and exact percentiles, responses by status and those that carried Idempotent-Replayed,
-- and the per-second timeline (responses, 2xx, p50, p99).

local ffi = require("ffi")
ffi.cdef [[
   typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
   int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")
local function now_us()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
   return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

REPLAY = REPLAY or 0.0
PATH = PATH or "/v1/transfers"
local LOG_STEP = math.log(1.02)   -- latency buckets 2% wide: bucket b holds [1.02^b, 1.02^(b+1)) µs
local BUCKETS = 10000              -- 1.02^10000 µs is far past any timeout

local threads = {}
local counter = 0

-- Runs in the main Lua state, once per thread, before the threads start.
function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
   table.insert(threads, thread)
end

-- --rate: SHARDPAY_BENCH_DELAY_MS is each connection's mean pause between requests (connections / rate), drawn
-- from 0.5 to 1.5 times it so that connections do not march in step. Without it wrk sends as fast as answers come.
local DELAY_MS = tonumber(os.getenv("SHARDPAY_BENCH_DELAY_MS") or "0") or 0
if DELAY_MS > 0 then
   function delay()
      return math.floor(DELAY_MS * (0.5 + math.random()))
   end
end

-- Per-thread state (each wrk thread has its own Lua state). Globals are read by done() through thread:get().
local ids, nids = {}, 0
local prefix = "bench"
local headers = {}
local ring_keys, ring_bodies, ring_size, ring_next, ring_filled = {}, {}, 4096, 1, 0
local n = 0
statuses = {}   -- responses by status
replayed = {}   -- responses carrying Idempotent-Replayed, by status
sent = 0
replays_sent = 0
started_us = 0  -- this thread's first request
-- The timeline, in flat tables (wrk's thread:get() crashes on nested ones): second since started_us ->
-- responses, -> 2xx responses, and second * BUCKETS + latency bucket -> responses.
per_sec = {}
per_sec_ok = {}
per_sec_lat = {}
unmatched = 0   -- responses without our X-Request-Id (no latency for the timeline)

function init(args)
   local path = args[1] or error("usage: -- <ids file> <key prefix>")
   prefix = args[2] or prefix
   for line in io.lines(path) do
      if #line > 0 then nids = nids + 1; ids[nids] = line end
   end
   if nids < 2 then error("need at least two wallet ids in " .. path) end
   local key = os.getenv("SHARDPAY_BENCH_KEY") or error("SHARDPAY_BENCH_KEY is not set")
   headers["Content-Type"] = "application/json"
   headers["Authorization"] = "Bearer " .. key
   math.randomseed(now_us() % 1000000007 + (tid or 0) * 7919)
   if scenario_init then scenario_init(args) end
end

-- A transfer of 1..100 cents between two different wallets of the ids file.
local function transfer_body(ids, nids)
   local a = math.random(1, nids)
   local b = math.random(1, nids - 1)
   if b >= a then b = b + 1 end
   return '{"source":"' .. ids[a] .. '","destination":"' .. ids[b] .. '","amount":' .. math.random(1, 100)
      .. ',"currency":"USD"}'
end
make_body = make_body or transfer_body

function request()
   local key, body
   if REPLAY > 0 and ring_filled > 0 and math.random() < REPLAY then
      local j = math.random(1, ring_filled)
      key, body = ring_keys[j], ring_bodies[j]
      replays_sent = replays_sent + 1
   else
      n = n + 1
      body = make_body(ids, nids)
      key = prefix .. "-" .. tid .. "-" .. n
      if REPLAY > 0 then
         ring_keys[ring_next], ring_bodies[ring_next] = key, body
         ring_next = ring_next % ring_size + 1
         if ring_filled < ring_size then ring_filled = ring_filled + 1 end
      end
   end
   sent = sent + 1
   local t = now_us()
   if started_us == 0 then started_us = t end
   headers["Idempotency-Key"] = key
   headers["X-Request-Id"] = tid .. "." .. sent .. "." .. t
   return wrk.format("POST", PATH, headers, body)
end

function response(status, hdrs, body)
   statuses[status] = (statuses[status] or 0) + 1
   if scenario_response then scenario_response(status, body) end
   if hdrs["idempotent-replayed"] or hdrs["Idempotent-Replayed"] then
      replayed[status] = (replayed[status] or 0) + 1
   end
   local t = now_us()
   local sec = math.floor((t - started_us) / 1000000)
   per_sec[sec] = (per_sec[sec] or 0) + 1
   if status >= 200 and status < 300 then per_sec_ok[sec] = (per_sec_ok[sec] or 0) + 1 end
   local rid = hdrs["x-request-id"] or hdrs["X-Request-Id"]
   local at = rid and tonumber(rid:match("%.(%d+)$"))
   if at then
      local us = t - at
      local key = sec * BUCKETS + (us > 1 and math.floor(math.log(us) / LOG_STEP) or 0)
      per_sec_lat[key] = (per_sec_lat[key] or 0) + 1
   else
      unmatched = unmatched + 1
   end
end

-- The value (µs) under which p% of a {bucket -> count} histogram lies (a bucket's upper edge).
local function percentile(hist, total, p)
   local keys = {}
   for b in pairs(hist) do table.insert(keys, b) end
   table.sort(keys)
   local target, seen = total * p / 100, 0
   for _, b in ipairs(keys) do
      seen = seen + hist[b]
      if seen >= target then return math.floor(math.exp((b + 1) * LOG_STEP)) end
   end
   return 0
end

function done(summary, latency, requests)
   local by_status, by_replayed, total_sent, total_replays, total_unmatched = {}, {}, 0, 0, 0
   local merged, origin = {}, nil
   for _, t in ipairs(threads) do
      local s0 = t:get("started_us")
      if s0 and s0 > 0 and (origin == nil or s0 < origin) then origin = s0 end
   end
   for _, t in ipairs(threads) do
      for code, count in pairs(t:get("statuses") or {}) do by_status[code] = (by_status[code] or 0) + count end
      for code, count in pairs(t:get("replayed") or {}) do by_replayed[code] = (by_replayed[code] or 0) + count end
      total_sent = total_sent + (t:get("sent") or 0)
      total_replays = total_replays + (t:get("replays_sent") or 0)
      total_unmatched = total_unmatched + (t:get("unmatched") or 0)
      local shift = math.floor(((t:get("started_us") or origin or 0) - (origin or 0)) / 1000000)
      local function slot(sec)
         local m = merged[sec + shift]
         if m == nil then m = {0, 0, {}}; merged[sec + shift] = m end
         return m
      end
      for sec, c in pairs(t:get("per_sec") or {}) do local m = slot(sec); m[1] = m[1] + c end
      for sec, c in pairs(t:get("per_sec_ok") or {}) do local m = slot(sec); m[2] = m[2] + c end
      for key, c in pairs(t:get("per_sec_lat") or {}) do
         local m = slot(math.floor(key / BUCKETS))
         local b = key % BUCKETS
         m[3][b] = (m[3][b] or 0) + c
      end
   end
   local function counts(map)
      local parts = {}
      for code, count in pairs(map) do table.insert(parts, string.format('"%d":%d', code, count)) end
      return "{" .. table.concat(parts, ",") .. "}"
   end
   local secs = {}
   for sec in pairs(merged) do table.insert(secs, sec) end
   table.sort(secs)
   local timeline = {}
   for _, sec in ipairs(secs) do
      local m = merged[sec]
      local timed = 0
      for _, c in pairs(m[3]) do timed = timed + c end
      table.insert(timeline, string.format("[%d,%d,%d,%d,%d]", sec, m[1], m[2],
         percentile(m[3], timed, 50), percentile(m[3], timed, 99)))
   end
   local pct = {}
   if summary.requests > 0 then
      for _, p in ipairs({50, 90, 95, 99, 99.9, 99.99}) do
         table.insert(pct, string.format('"p%s":%d', tostring(p), latency:percentile(p)))
      end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {' .. (scenario_report and scenario_report(threads) or "") .. '"duration_us":%d,"requests":%d,"bytes":%d,"sent":%d,"replays_sent":%d,"replayed":%s,'
      .. '"unmatched":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"statuses":%s,'
      .. '"latency_us":{"min":%d,"max":%d,"mean":%.1f%s},"timeline":[%s]}\n',
      summary.duration, summary.requests, summary.bytes, total_sent, total_replays, counts(by_replayed),
      total_unmatched, e.connect, e.read, e.write, e.status, e.timeout, counts(by_status),
      summary.requests > 0 and latency.min or 0, latency.max, latency.mean,
      #pct > 0 and ("," .. table.concat(pct, ",")) or "", table.concat(timeline, ",")))
end
