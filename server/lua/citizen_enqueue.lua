-- Queue a message to a caller's phone once per idempotency key, and record it in the unit's
-- event stream, atomically: a retried step (the same key) queues and records nothing more.
-- A request's messages go out in the order queued: only the oldest undelivered one ("head")
-- is due; the request is in the due set while it has one.
-- KEYS[1] the request's messages (hash: n, head, k:<key> -> n, m:<n> message, a:<n> attempts,
--         s:<n> state)  KEYS[2] due requests (sorted set)  KEYS[3] the unit's events (stream)
-- ARGV[1] idempotency key  ARGV[2] request id  ARGV[3] now (epoch ms)  ARGV[4] the message
-- (JSON)  ARGV[5] the citizen_message_queued event (JSON)  ARGV[6] events maxlen
-- Returns the message's number in the request (1, 2, ...), 0 if the key was queued before.
if redis.call('HEXISTS', KEYS[1], 'k:' .. ARGV[1]) == 1 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local head = tonumber(redis.call('HGET', KEYS[1], 'head') or '1')
redis.call('HSET', KEYS[1], 'head', head, 'k:' .. ARGV[1], n, 'm:' .. n, ARGV[4],
           'a:' .. n, 0, 's:' .. n, 'queued')
redis.call('PERSIST', KEYS[1])
if head == n then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2]) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[5])
return n
