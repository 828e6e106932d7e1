-- Take the request's next message to send (its oldest undelivered one), counting the attempt.
-- The caller claimed the request in the due set first (due.lua: a lease); the attempt number
-- fences a late answer of a process whose lease ran out (see citizen_done.lua).
-- KEYS[1] the request's messages (hash)  KEYS[2] due requests (sorted set)
-- ARGV[1] request id
-- Returns {n, attempt, message JSON}, or nil (and the request leaves the due set) when
-- nothing is waiting.
local head = tonumber(redis.call('HGET', KEYS[1], 'head') or '1')
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
if head > n then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return false
end
local attempt = redis.call('HINCRBY', KEYS[1], 'a:' .. head, 1)
return {head, attempt, redis.call('HGET', KEYS[1], 'm:' .. head)}
