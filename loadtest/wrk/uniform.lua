-- Uniform random pairs among all seeded wallets (with N shards, (N-1)/N of them cross-shard).
-- The harness passes an ids file holding every seeded wallet. See transfer.lua for usage.
REPLAY = 0.0
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "transfer.lua")
