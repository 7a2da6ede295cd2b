-- Retry storm: uniform random pairs, but half the requests resend one of the thread's last 4096 keys with the
-- identical body. Each must be answered 201/402 with Idempotent-Replayed, or 409 while the first is still
-- running, and never move money twice (the harness checks the database). See transfer.lua for usage.
REPLAY = 0.5
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "transfer.lua")
