-- Queue a message to a caller's phone once per idempotency key, and record it in the unit's
-- event stream: a retried step (the same key) queues and records nothing more. A request's
-- messages go out in the order queued: only the oldest undelivered one ("head") is due; the
-- request is in the due set while it has one.
-- messages_key: the request's messages (hash: n, head, k:<key> -> n, m:<n> message,
-- a:<n> attempts, s:<n> state)  due_key: due requests (sorted set)  events_key: the unit's
-- events (stream). Returns the message's number in the request (1, 2, ...), 0 if the key was
-- queued before.
local function citizen_enqueue(messages_key, due_key, events_key, key, rid, now_ms, message,
                               event, maxlen)
  if redis.call('HEXISTS', messages_key, 'k:' .. key) == 1 then return 0 end
  local n = redis.call('HINCRBY', messages_key, 'n', 1)
  local head = tonumber(redis.call('HGET', messages_key, 'head') or '1')
  redis.call('HSET', messages_key, 'head', head, 'k:' .. key, n, 'm:' .. n, message,
             'a:' .. n, 0, 's:' .. n, 'queued')
  redis.call('PERSIST', messages_key)
  if head == n then redis.call('ZADD', due_key, now_ms, rid) end
  redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'e', event)
  return n
end
