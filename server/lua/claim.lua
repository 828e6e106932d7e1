-- Carry out an offer decided by server.lifecycle (the request must be in ARGV[8], it moves to
-- ARGV[9] as event ARGV[10]) with the first eligible candidate: claim one unit of the
-- squad's capacity, append the offer to its outbox, start the offer timer, record the event.
-- Atomic, so concurrent dispatch from any number of processes never exceeds a squad's
-- capacity. Candidates not yet offered this request come first, in the given order.
-- KEYS[1] request  KEYS[2] queue  KEYS[3] available  KEYS[4] free  KEYS[5] tried
-- KEYS[6] timers  KEYS[7] events  KEYS[8] timeline  KEYS[9] assignment  KEYS[10] stats
-- KEYS[11..] three per candidate, in ARGV order: squad hash, outbox, jobs
-- ARGV[1] request id  ARGV[2] assignment id  ARGV[3] now (epoch ms)  ARGV[4] respond_by (ms)
-- ARGV[5] offer body (MessagePack, seq omitted)  ARGV[6] events maxlen
-- ARGV[7] outbox retention (frames)  ARGV[8] state required  ARGV[9] state after
-- ARGV[10] event name  ARGV[11] offer timer member (server.timers)
-- ARGV[12..] candidate squad ids
-- Returns {'ok', squad, seq, hub, version} | {'stale', state} | {'none'}
--#include lib/outbox_append.lua
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= ARGV[8] then
  return {'stale', state or ''}
end
local function eligible(id)
  return redis.call('SISMEMBER', KEYS[3], id) == 1
    and tonumber(redis.call('HGET', KEYS[4], id) or '0') > 0
end
local pick = nil
local FIRST = 12
for pass = 1, 2 do
  for i = FIRST, #ARGV do
    local id = ARGV[i]
    local was_tried = redis.call('SISMEMBER', KEYS[5], id) == 1
    if (pass == 1) ~= was_tried and eligible(id) then
      pick = i - FIRST + 1
      break
    end
  end
  if pick then break end
end
if not pick then
  return {'none'}
end
local rid, aid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local sid = ARGV[FIRST + pick - 1]
local squad_key = KEYS[10 + (pick - 1) * 3 + 1]
local outbox_key = KEYS[10 + (pick - 1) * 3 + 2]
local jobs_key = KEYS[10 + (pick - 1) * 3 + 3]
redis.call('HINCRBY', KEYS[4], sid, -1)
local seq = outbox_append(squad_key, outbox_key, ARGV[5], ARGV[7])
redis.call('SADD', jobs_key, aid)
redis.call('SADD', KEYS[5], sid)
redis.call('HSET', KEYS[9], 'request', rid, 'squad', sid, 'state', ARGV[9],
  'respond_by', ARGV[4], 'created', ARGV[3])
redis.call('HSET', KEYS[1], 'state', ARGV[9], 'squad', sid, 'assignment', aid,
  'offered_at', ARGV[3])
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('ZREM', KEYS[2], rid)
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[11])
redis.call('HINCRBY', KEYS[10], 'offers', 1)
local event = cjson.encode({type = ARGV[10], request = rid, by = 'system', squad = sid, assignment = aid,
  at = now / 1000, seq = seq, respond_by = tonumber(ARGV[4]) / 1000})
redis.call('RPUSH', KEYS[8], event)
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[6], '*', 'e', event)
return {'ok', sid, seq, redis.call('HGET', squad_key, 'hub') or '', version}
