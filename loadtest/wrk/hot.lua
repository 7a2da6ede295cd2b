-- 10 hot wallets: every transfer is between two of them (the harness passes an ids file of 10 wallets spread
-- over the shards), so rows lock-contend and most pairs still cross shards. See transfer.lua for usage.
REPLAY = 0.0
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "transfer.lua")
