-- Commit one lifecycle step (computed by server.lifecycle) atomically: compare-and-set on the
-- request's version, set its fields, record the events, and carry out the step's effects.
-- KEYS[1] request  KEYS[2] timeline  KEYS[3] events  KEYS[4] queue  KEYS[5] timers
-- KEYS[6] free  KEYS[7] stats  KEYS[8] assignment  KEYS[9] squad hash  KEYS[10] outbox
-- KEYS[11] jobs  KEYS[12] command (idempotency key; unused without flag C)  KEYS[13] open requests
-- KEYS[14] the request's notices (hash)  KEYS[15] its open notices (set)
-- KEYS[16] the unit's open notices  KEYS[17] the unit's closed notices
-- ARGV[1] expected version ('0': the request must not exist yet)
-- ARGV[2] events as JSON, one per line  ARGV[3] events maxlen
-- ARGV[4] flags: R release squad, Q requeue, D dequeue, T cancel the offer timer ARGV[14],
--                N non-response, C remember command, A assignment state = ARGV[12],
--                O open (add to the unit's open requests), X closed (remove)
-- ARGV[5] revoke frame body ('' = none)  ARGV[6] request id  ARGV[7] assignment id
-- ARGV[8] squad id  ARGV[9] command memory (s)  ARGV[10] queue score
-- ARGV[11] number of field/value pairs  ARGV[12] assignment state
-- ARGV[13] outbox retention (frames)  ARGV[14] offer timer member (server.store.timers)
-- ARGV[15] the step's time (epoch s): stamps and closed notices
-- ARGV[16] deadline timers to add, one 'due_ms member' per line (server.deadlines)
-- ARGV[17] timers to remove, one member per line
-- ARGV[18] request fields to stamp with ARGV[15] if unset (first acceptance, arrival)
-- ARGV[19] notice kinds the step closes, as ',kind,kind,' ('' none)
-- ARGV[20] the step's event name (a closed notice's closed_by)
-- ARGV[21] the squad's acknowledged seq to record first, whatever the step's outcome
--          ('0': none; a phone's acks ride on its next command: server.field.session)
-- ARGV[22] the caller's messages to queue with the step, as a JSON array of
--          [key, queued at (epoch ms), message JSON, citizen_message_queued event] ('[]' none)
-- ARGV[23] what the command id stands for (flag C): its assignment and command, kept under
--          KEYS[12] so that a retry can be told from another command reusing the id
-- ARGV[24..] field/value pairs for the request hash
-- KEYS[18] the request's citizen messages (hash)  KEYS[19] the unit's due citizen requests
-- Flag S: the assignment must be squad ARGV[8]'s (a squad acts only on its own assignments).
-- Returns {'ok', version, revoke seq, hub, queued requests} | {'stale', version}
--       | {'dup', what the id was first used for (ARGV[23] then)} | {'foreign'}
--   ('queued requests': the unit's queue length when the step released a squad, else -1)
--#include lib/outbox_append.lua
--#include lib/outbox_ack.lua
--#include lib/record_event.lua
--#include lib/citizen_enqueue.lua
local flags = ARGV[4]
local function has(flag) return string.find(flags, flag, 1, true) ~= nil end
if ARGV[21] ~= '0' then outbox_ack(KEYS[9], KEYS[10], ARGV[21]) end
if has('S') and redis.call('HGET', KEYS[8], 'squad') ~= ARGV[8] then
  return {'foreign'}
end
if has('C') then
  local seen = redis.call('GET', KEYS[12])
  if seen then return {'dup', seen} end
end
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version ~= tonumber(ARGV[1]) then
  return {'stale', version}
end
local FIRST_PAIR = 24
local pairs_n = tonumber(ARGV[11])
if pairs_n > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, FIRST_PAIR, FIRST_PAIR - 1 + pairs_n * 2))
end
version = redis.call('HINCRBY', KEYS[1], 'v', 1)
local rid, aid, sid = ARGV[6], ARGV[7], ARGV[8]
for event in string.gmatch(ARGV[2], '[^\n]+') do record_event(KEYS[2], KEYS[3], ARGV[3], event) end
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
if ARGV[5] ~= '' then seq = outbox_append(KEYS[9], KEYS[10], ARGV[5], ARGV[13]) end
if has('C') then redis.call('SET', KEYS[12], ARGV[23], 'EX', ARGV[9]) end
local at = tonumber(ARGV[15])
for line in string.gmatch(ARGV[16], '[^\n]+') do
  local due, member = string.match(line, '^(%S+) (.+)$')
  redis.call('ZADD', KEYS[5], due, member)
end
for member in string.gmatch(ARGV[17], '[^\n]+') do redis.call('ZREM', KEYS[5], member) end
for name in string.gmatch(ARGV[18], '[^\n]+') do redis.call('HSETNX', KEYS[1], name, ARGV[15]) end
-- Close the open notices this step meets (a request without any pays one SCARD).
if ARGV[19] ~= '' and redis.call('SCARD', KEYS[15]) > 0 then
  -- Who took the step (its event's "by"): the record says who met the notice.
  local met_by = nil
  for event in string.gmatch(ARGV[2], '[^\n]+') do
    local ok, decoded = pcall(cjson.decode, event)
    if ok and type(decoded) == 'table' and decoded.type == ARGV[20] then met_by = decoded.by end
  end
  for _, nid in ipairs(redis.call('SMEMBERS', KEYS[15])) do
    local raw = redis.call('HGET', KEYS[14], nid)
    local notice = raw and cjson.decode(raw)
    if not notice then
      redis.call('SREM', KEYS[15], nid)
      redis.call('ZREM', KEYS[16], nid)
    elseif string.find(ARGV[19], ',' .. notice.kind .. ',', 1, true) then
      notice.state = 'closed'
      notice.closed_at = at
      notice.closed_by = ARGV[20]
      redis.call('HSET', KEYS[14], nid, cjson.encode(notice))
      redis.call('SREM', KEYS[15], nid)
      redis.call('ZREM', KEYS[16], nid)
      redis.call('ZADD', KEYS[17], math.floor(at * 1000), nid)
      local event = cjson.encode({type = 'notice_closed', request = rid, at = at, by = 'system',
        notice = nid, notice_kind = notice.kind, level = notice.level, closed_by = ARGV[20],
        met_by = met_by})
      record_event(KEYS[2], KEYS[3], ARGV[3], event)
    end
  end
end
if ARGV[22] ~= '[]' then
  for _, m in ipairs(cjson.decode(ARGV[22])) do
    citizen_enqueue(KEYS[18], KEYS[19], KEYS[3], m[1], rid, m[2], m[3], m[4], ARGV[3])
  end
end
local hub = ''
if sid ~= '' then hub = redis.call('HGET', KEYS[9], 'hub') or '' end
local queued = -1
if has('R') then queued = redis.call('ZCARD', KEYS[4]) end
return {'ok', version, seq, hub, queued}
