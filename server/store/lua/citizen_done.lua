-- Record one send attempt of message n and what follows: delivered or failed for good (the
-- next message of the request becomes due), or a retry at a later time. Every attempt is
-- recorded in the event stream, even one that no longer counts.
-- KEYS[1] the request's messages (hash)  KEYS[2] due requests (sorted set)
-- KEYS[3] the unit's events (stream)
-- ARGV[1] request id  ARGV[2] n  ARGV[3] attempt number  ARGV[4] delivered|failed|retry
-- ARGV[5] next attempt (epoch ms; retry only)  ARGV[6] now (epoch ms)
-- ARGV[7] the citizen_message_attempt event  ARGV[8] the delivered/failed event ('' for retry)
-- ARGV[9] events maxlen  ARGV[10] how long the request's keys are remembered once nothing
-- waits (s)
-- Returns the outcome applied, 'stale' (the message is done already) or 'superseded' (a retry
-- of an attempt another process has taken over since).
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'e', ARGV[7])
local n = ARGV[2]
if redis.call('HGET', KEYS[1], 's:' .. n) ~= 'queued' then return 'stale' end
if ARGV[4] == 'retry' then
  if redis.call('HGET', KEYS[1], 'a:' .. n) ~= ARGV[3] then return 'superseded' end
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
  return 'retry'
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'e', ARGV[8])
-- Only the key stays (it dedupes a step retried later); the message is in the ledger.
redis.call('HDEL', KEYS[1], 'm:' .. n, 'a:' .. n, 's:' .. n)
local head = tonumber(n) + 1
redis.call('HSET', KEYS[1], 'head', head)
if head <= tonumber(redis.call('HGET', KEYS[1], 'n')) then
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[10])
end
return ARGV[4]
