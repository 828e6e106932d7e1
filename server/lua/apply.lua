-- Commit one lifecycle step (computed by server.lifecycle) atomically: compare-and-set on the
-- request's version, set its fields, record the events, and carry out the step's effects.
-- KEYS[1] request  KEYS[2] timeline  KEYS[3] events  KEYS[4] queue  KEYS[5] timers
-- KEYS[6] free  KEYS[7] stats  KEYS[8] assignment  KEYS[9] squad hash  KEYS[10] outbox
-- KEYS[11] jobs  KEYS[12] command (idempotency key; unused without flag C)  KEYS[13] open requests
-- ARGV[1] expected version ('0': the request must not exist yet)
-- ARGV[2] events as JSON, one per line  ARGV[3] events maxlen
-- ARGV[4] flags: R release squad, Q requeue, D dequeue, T cancel the offer timer ARGV[14],
--                N non-response, C remember command, A assignment state = ARGV[12],
--                O open (add to the unit's open requests), X closed (remove)
-- ARGV[5] revoke frame body ('' = none)  ARGV[6] request id  ARGV[7] assignment id
-- ARGV[8] squad id  ARGV[9] command memory (s)  ARGV[10] queue score
-- ARGV[11] number of field/value pairs  ARGV[12] assignment state
-- ARGV[13] outbox retention (frames)  ARGV[14] offer timer member (server.timers)
-- ARGV[15..] field/value pairs for the request hash
-- Returns {'ok', version, revoke seq, hub} | {'stale', version} | {'dup', outcome}
local flags = ARGV[4]
local function has(flag) return string.find(flags, flag, 1, true) ~= nil end
if has('C') then
  local seen = redis.call('GET', KEYS[12])
  if seen then return {'dup', seen} end
end
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version ~= tonumber(ARGV[1]) then
  return {'stale', version}
end
local pairs_n = tonumber(ARGV[11])
if pairs_n > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 15, 14 + pairs_n * 2))
end
version = redis.call('HINCRBY', KEYS[1], 'v', 1)
local rid, aid, sid = ARGV[6], ARGV[7], ARGV[8]
for event in string.gmatch(ARGV[2], '[^\n]+') do
  redis.call('RPUSH', KEYS[2], event)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'e', event)
end
if has('T') then redis.call('ZREM', KEYS[5], ARGV[14]) end
if has('A') then redis.call('HSET', KEYS[8], 'state', ARGV[12]) end
if has('R') and redis.call('SREM', KEYS[11], aid) == 1 then
  redis.call('HINCRBY', KEYS[6], sid, 1)
end
if has('N') then redis.call('HINCRBY', KEYS[7], 'non_responses', 1) end
if has('Q') then redis.call('ZADD', KEYS[4], ARGV[10], rid) end
if has('D') then redis.call('ZREM', KEYS[4], rid) end
if has('O') then redis.call('ZADD', KEYS[13], ARGV[10], rid) end
if has('X') then redis.call('ZREM', KEYS[13], rid) end
local seq = 0
if ARGV[5] ~= '' then
  seq = redis.call('HINCRBY', KEYS[9], 'seq', 1)
  redis.call('ZADD', KEYS[10], seq, string.format('%012d', seq) .. ARGV[5])
  -- Retention (same in claim.lua): keep the newest frames, remember the highest dropped seq.
  local excess = redis.call('ZCARD', KEYS[10]) - tonumber(ARGV[13])
  if excess > 0 then
    local dropped = redis.call('ZRANGE', KEYS[10], excess - 1, excess - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', KEYS[10], 0, excess - 1)
    redis.call('HSET', KEYS[9], 'trimmed', dropped[2])
  end
end
if has('C') then redis.call('SET', KEYS[12], 'ok', 'EX', ARGV[9]) end
local hub = ''
if sid ~= '' then hub = redis.call('HGET', KEYS[9], 'hub') or '' end
return {'ok', version, seq, hub}
