-- Bulk: every request is POST /v1/transfer_batches with SHARDPAY_BENCH_BATCH (default 100) transfers between
-- uniformly random seeded wallets (with N shards, (N-1)/N of them cross-shard), 1..100 cents each, every item
-- with its own reference "<key prefix>-<thread>-<n>-<i>" and the batch with its own Idempotency-Key, as in
-- transfer.lua, whose timeline and report this script shares. Each answer's items are counted by status
-- ("items" in the report): the harness checks each fresh item 201 against the transfers in the databases.
--
--   SHARDPAY_BENCH_KEY=sk_... SHARDPAY_BENCH_BATCH=100 wrk -t1 -c16 -d30s -s loadtest/wrk/bulk.lua \
--       http://127.0.0.1:8300 -- <ids file> <idempotency key prefix>
REPLAY = 0.0
PATH = "/v1/transfer_batches"
BATCH = tonumber(os.getenv("SHARDPAY_BENCH_BATCH") or "100") or 100

local ref_prefix = "bulk"
local batches = 0
items = {}  -- item results by status, over this thread's answered batches

function scenario_init(args)
   ref_prefix = (args[2] or "bulk") .. "-" .. (tid or 0)
end

function make_body(ids, nids)
   batches = batches + 1
   local parts = {}
   for i = 1, BATCH do
      local a = math.random(1, nids)
      local b = math.random(1, nids - 1)
      if b >= a then b = b + 1 end
      parts[i] = '{"source":"' .. ids[a] .. '","destination":"' .. ids[b] .. '","amount":' .. math.random(1, 100)
         .. ',"currency":"USD","reference":"' .. ref_prefix .. "-" .. batches .. "-" .. i .. '"}'
   end
   return '{"transfers":[' .. table.concat(parts, ",") .. ']}'
end

-- Every item's "status": a batch's answer is its items' results, in order (a 4xx/5xx batch has none).
function scenario_response(status, body)
   if status ~= 201 or body == nil then return end
   for code in body:gmatch('"reference":"[^"]*","status":(%d+)') do
      local c = tonumber(code)
      items[c] = (items[c] or 0) + 1
   end
end

-- What done() adds to the report: item results by status over every thread.
function scenario_report(threads)
   local merged = {}
   for _, t in ipairs(threads) do
      for code, count in pairs(t:get("items") or {}) do merged[code] = (merged[code] or 0) + count end
   end
   local parts = {}
   for code, count in pairs(merged) do table.insert(parts, string.format('"%d":%d', code, count)) end
   return '"items":{' .. table.concat(parts, ",") .. '},"batch":' .. BATCH .. ","
end

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "transfer.lua")
