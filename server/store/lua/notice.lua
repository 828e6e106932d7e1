-- Issue one supervision notice (decided by server.deadlines), exactly once: the notice record
-- is created only if absent (HSETNX), so however many processes fire the same timer, and
-- whichever dies half-way, one notice per request, kind and level exists. Compare-and-set on
-- the request's version: a step committed since the caller read the request (it may have met
-- the milestone, or moved the squad) makes the caller read again.
-- KEYS[1] request  KEYS[2] the request's notices (hash)  KEYS[3] its open notices (set)
-- KEYS[4] the unit's open notices  KEYS[5] timeline  KEYS[6] events  KEYS[7] timers
-- KEYS[8] squad hash  KEYS[9] outbox (of the squad holding the request; unused without one)
-- ARGV[1] request version read  ARGV[2] notice id  ARGV[3] notice as JSON
-- ARGV[4] notice_issued event as JSON  ARGV[5] events maxlen  ARGV[6] issued at (epoch ms)
-- ARGV[7] escalation timer member ('' = top level: none)  ARGV[8] its due time (epoch ms)
-- ARGV[9] notice frame body for the squad (MessagePack, seq omitted; '' = no squad)
-- ARGV[10] outbox retention (frames)
-- Returns {'issued', seq, hub} | {'exists'} | {'stale', version}
--#include lib/outbox_append.lua
--#include lib/record_event.lua
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version ~= tonumber(ARGV[1]) then
  return {'stale', version}
end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 0 then
  return {'exists'}
end
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[2])
record_event(KEYS[5], KEYS[6], ARGV[5], ARGV[4])
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[7], ARGV[8], ARGV[7]) end
local seq, hub = 0, ''
if ARGV[9] ~= '' then
  seq = outbox_append(KEYS[8], KEYS[9], ARGV[9], ARGV[10])
  hub = redis.call('HGET', KEYS[8], 'hub') or ''
end
return {'issued', seq, hub}
