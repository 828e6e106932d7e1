-- Carry out an offer decided by server.lifecycle (the request must be in a.required, it moves
-- to a.after as event a.event) with the first eligible candidate: claim one unit of the
-- squad's capacity, append the offer to its outbox, start the offer timer, record the event.
-- Atomic, so concurrent dispatch from any number of processes never exceeds a squad's
-- capacity. Candidates not yet offered this request come first, in the given order.
-- k: {request, queue, available, free, tried, timers, events, timeline, assignment, stats}
-- a: {rid, aid, now (epoch ms), respond_by (ms), body (offer, seq omitted), maxlen (events),
--     keep (outbox frames), required, after, event, timer (offer timer member)}
-- ids: candidate squad ids; squad_keys(i): squad hash, outbox and jobs keys of ids[i]
-- Returns {'ok', squad, seq, hub, version} | {'stale', state} | {'none'}
local function claim_offer(k, a, ids, squad_keys)
  local state = redis.call('HGET', k.request, 'state')
  if state ~= a.required then
    return {'stale', state or ''}
  end
  local function eligible(id)
    return redis.call('SISMEMBER', k.available, id) == 1
      and tonumber(redis.call('HGET', k.free, id) or '0') > 0
  end
  local pick = nil
  for pass = 1, 2 do
    for i, id in ipairs(ids) do
      local was_tried = redis.call('SISMEMBER', k.tried, id) == 1
      if (pass == 1) ~= was_tried and eligible(id) then
        pick = i
        break
      end
    end
    if pick then break end
  end
  if not pick then
    return {'none'}
  end
  local rid, aid, now = a.rid, a.aid, tonumber(a.now)
  local sid = ids[pick]
  local squad_key, outbox_key, jobs_key = squad_keys(pick)
  redis.call('HINCRBY', k.free, sid, -1)
  local seq = outbox_append(squad_key, outbox_key, a.body, a.keep)
  redis.call('SADD', jobs_key, aid)
  redis.call('SADD', k.tried, sid)
  redis.call('HSET', k.assignment, 'request', rid, 'squad', sid, 'state', a.after,
    'respond_by', a.respond_by, 'created', a.now)
  redis.call('HSET', k.request, 'state', a.after, 'squad', sid, 'assignment', aid,
    'offered_at', a.now)
  local version = redis.call('HINCRBY', k.request, 'v', 1)
  redis.call('ZREM', k.queue, rid)
  redis.call('ZADD', k.timers, a.respond_by, a.timer)
  redis.call('HINCRBY', k.stats, 'offers', 1)
  local event = cjson.encode({type = a.event, request = rid, by = 'system', squad = sid,
    assignment = aid, at = now / 1000, seq = seq, respond_by = tonumber(a.respond_by) / 1000})
  record_event(k.timeline, k.events, a.maxlen, event)
  return {'ok', sid, seq, redis.call('HGET', squad_key, 'hub') or '', version}
end

-- k and a of claim_offer from KEYS[1..10] and ARGV[1..11], the layout claim.lua and
-- offer_nearest.lua share (see their headers).
local function claim_request()
  return {request = KEYS[1], queue = KEYS[2], available = KEYS[3], free = KEYS[4],
      tried = KEYS[5], timers = KEYS[6], events = KEYS[7], timeline = KEYS[8],
      assignment = KEYS[9], stats = KEYS[10]},
    {rid = ARGV[1], aid = ARGV[2], now = ARGV[3], respond_by = ARGV[4], body = ARGV[5],
      maxlen = ARGV[6], keep = ARGV[7], required = ARGV[8], after = ARGV[9], event = ARGV[10],
      timer = ARGV[11]}
end
