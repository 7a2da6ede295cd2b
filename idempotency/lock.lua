-- One Redis key per (merchant, Idempotency-Key): "L:<token>" while a request holds it, then
-- "R:<fingerprint>\n<status>\n<body>" once its final response is known. A tombstone key per request token marks a
-- request that gave up on Redis (idem_release).

-- Returns {'acquired'}, {'locked'}, {'cached', value} or {'gone'} (this very request gave up on Redis already: its
-- call ran late, after a timeout, and must not take the lock).
local function idem_begin(key, tombstone, token, lock_ms)
  if redis.call('EXISTS', tombstone) == 1 then
    return {'gone'}
  end
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

-- Give back the lock of a request that gave up on Redis (its call timed out or failed, so it cannot know whether
-- it took the lock): delete the lock if it is the request's; otherwise leave the request's tombstone, so that its
-- call, if Redis runs it late, takes no lock.
local function idem_release(key, tombstone, token, lock_ms)
  if redis.call('GET', key) == 'L:' .. token then
    redis.call('DEL', key)
    return 1
  end
  redis.call('SET', tombstone, '1', 'PX', lock_ms)
  return 0
end
