-- GCRA (generic cell rate algorithm): one key per API key holding the theoretical arrival time (TAT) in µs.
-- Returns {allowed 0|1, remaining, retry_after_ms, reset_ms}.
local function gcra(key, rate, burst)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local interval = 1000000 / rate
  local tolerance = interval * burst
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tolerance
  if now < allow_at then
    return {0, 0, math.ceil((allow_at - now) / 1000), math.ceil((tat - now) / 1000)}
  end
  redis.call('SET', key, string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
  local remaining = math.floor((tolerance - (new_tat - now)) / interval)
  return {1, remaining, 0, math.ceil((new_tat - now) / 1000)}
end
