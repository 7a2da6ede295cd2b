-- Pay-ins: every request is POST /v1/payments with one order of 1.00..100.00 USD to a random seeded wallet,
-- charged to one of the pm_ tokens the harness got through the PSP simulator's hosted page before the load (a
-- pm_ is a saved card: it can be charged any number of times, each order under its own key). Each request has a
-- unique Idempotency-Key, as in transfer.lua, whose timeline and report this script shares.
--
--   SHARDPAY_BENCH_KEY=sk_... wrk -t1 -c64 -d30s -s loadtest/wrk/payments.lua http://127.0.0.1:8300 \
--       -- <ids file> <idempotency key prefix> <payment methods file: one pm_ token a line>
REPLAY = 0.0
PATH = "/v1/payments"

local methods, nmethods = {}, 0

function scenario_init(args)
   local path = args[3] or error("usage: -- <ids file> <key prefix> <payment methods file>")
   for line in io.lines(path) do
      if #line > 0 then nmethods = nmethods + 1; methods[nmethods] = line end
   end
   if nmethods < 1 then error("no pm_ token in " .. path) end
end

function make_body(ids, nids)
   return '{"payment_method":"' .. methods[math.random(1, nmethods)] .. '","orders":[{"destination":"'
      .. ids[math.random(1, nids)] .. '","amount":' .. math.random(100, 10000) .. ',"currency":"USD"}]}'
end

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "transfer.lua")
