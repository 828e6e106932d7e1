-- A squad says hello on this hub. If its token is right, it is marked online here (a squad
-- that stepped aside on a draining hub, step_aside.lua, is a candidate again) and the reply
-- holds all that its session needs to resume, so that a hello is one round trip.
-- KEYS[1] squad hash  KEYS[2] available  KEYS[3] its active assignments (set)
-- KEYS[4] its outbox
-- ARGV[1] squad id  ARGV[2] hub id  ARGV[3] connection id
-- ARGV[4] the token's SHA-256 (hex): compared with the stored one. Lua 5.1 interns every
-- string, so == compares two pointers: its time does not depend on how much matches.
-- ARGV[5] the last seq the phone saw  ARGV[6] the unit's assignment key prefix (…:as:)
-- Returns {0} if the squad is unknown or the token is wrong (nothing is written); else
-- {1, seq, acked, duty, trimmed, frames, jobs, offline_since}: the last numbered frame, the
-- last acknowledged, '1' if on duty, the highest seq dropped from the outbox unacknowledged
-- (retention); the kept frames numbered above ARGV[5] (outbox members, in order); the
-- active assignments, flat: id, request, state, respond_by ('' where missing) for each;
-- when its last connection ended if it was offline until now ('' if it was still online
-- elsewhere, or that time is unknown).
local stored = redis.call('HGET', KEYS[1], 'token_hash')
if not stored or stored ~= ARGV[4] then return {0} end
local before = redis.call('HMGET', KEYS[1], 'online', 'last_seen')
local offline_since = (before[1] ~= '1' and before[2]) or ''
redis.call('HSET', KEYS[1], 'online', '1', 'hub', ARGV[2], 'conn', ARGV[3])
redis.call('HDEL', KEYS[1], 'aside')
local duty = redis.call('HGET', KEYS[1], 'duty') or '0'
if duty == '1' then redis.call('SADD', KEYS[2], ARGV[1]) end
local jobs = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local f = redis.call('HMGET', ARGV[6] .. id, 'request', 'state', 'respond_by')
  jobs[#jobs + 1] = id
  jobs[#jobs + 1] = f[1] or ''
  jobs[#jobs + 1] = f[2] or ''
  jobs[#jobs + 1] = f[3] or ''
end
return {1, redis.call('HGET', KEYS[1], 'seq') or '0', redis.call('HGET', KEYS[1], 'acked') or '0',
  duty, redis.call('HGET', KEYS[1], 'trimmed') or '0',
  redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[5], '+inf'), jobs, offline_since}
