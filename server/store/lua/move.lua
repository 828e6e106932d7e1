-- Receive a request moved to this unit by a ruling (server.center.moves): the second write
-- of a move, after the old unit committed the 'reassigned' step. Creates the request's hash
-- (the old one's fields, as the step left them), its timeline (the old one's, then this
-- unit's events), and puts it in this unit's queue and open requests. Idempotent by the
-- version: a hash here at ARGV[1] or later is this move done already (a retry after a crash);
-- an older one is what is left of an earlier stay in this unit, replaced.
-- The request's supervision notices follow it (one record per request, kind and level,
-- whichever unit holds it): its notices and its open ones are copied here, and its open
-- ones join this unit's open notices (the caller then drops them from the old unit's).
-- KEYS[1] request  KEYS[2] timeline  KEYS[3] events  KEYS[4] queue  KEYS[5] open requests
-- KEYS[6] the request's notices  KEYS[7] its open notices  KEYS[8] the unit's open notices
-- ARGV[1] version of the moved request (the old unit's after 'reassigned', plus one)
-- ARGV[2] request id  ARGV[3] queue score (time received)  ARGV[4] events maxlen
-- ARGV[5] number of timeline entries copied  ARGV[6] number of field/value pairs
-- ARGV[7] number of notice id/JSON pairs  ARGV[8] number of open notice id/issued-ms pairs
-- ARGV[9 ..] the copied timeline entries, the field/value pairs, the notice pairs, the open
--            notice pairs, then this unit's new events (JSON), which also go to this unit's
--            event stream
-- Returns {'moved', version} | {'done', version}
--#include lib/record_event.lua
local version = tonumber(ARGV[1])
local present = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if present >= version then
  return {'done', present}
end
redis.call('DEL', KEYS[1], KEYS[2])
local copied, pairs_n = tonumber(ARGV[5]), tonumber(ARGV[6])
local notices_n, open_n = tonumber(ARGV[7]), tonumber(ARGV[8])
local first_pair = 9 + copied
local first_notice = first_pair + pairs_n * 2
local first_open = first_notice + notices_n * 2
local first_new = first_open + open_n * 2
for i = 9, first_pair - 1 do
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
if pairs_n > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, first_pair, first_notice - 1))
end
if notices_n > 0 then
  redis.call('HSET', KEYS[6], unpack(ARGV, first_notice, first_open - 1))
end
for i = first_open, first_new - 1, 2 do
  redis.call('SADD', KEYS[7], ARGV[i])
  redis.call('ZADD', KEYS[8], ARGV[i + 1], ARGV[i])
end
redis.call('HSET', KEYS[1], 'v', version)
for i = first_new, #ARGV do record_event(KEYS[2], KEYS[3], ARGV[4], ARGV[i]) end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[2])
return {'moved', version}
