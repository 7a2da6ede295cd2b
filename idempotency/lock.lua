-- One Redis key per (merchant, Idempotency-Key): "L:<token>" while a request holds it, then
-- "R:<fingerprint>\n<status>\n<body>" once its final response is known.

-- Returns {'acquired'}, {'locked'} or {'cached', value}.
local function idem_begin(key, token, lock_ms)
  local value = redis.call('GET', key)
  if not value then
    redis.call('SET', key, 'L:' .. token, 'PX', lock_ms)
    return {'acquired'}
  end
  if string.sub(value, 1, 2) == 'L:' then
    return {'locked'}
  end
  return {'cached', value}
end

-- Only the holder of the lock may store a response or release it (compare-and-set / compare-and-delete).
local function idem_finish(key, token, response, ttl_s)
  if redis.call('GET', key) ~= 'L:' .. token then
    return 0
  end
  if response == '' then
    redis.call('DEL', key)
  else
    redis.call('SET', key, response, 'EX', ttl_s)
  end
  return 1
end
