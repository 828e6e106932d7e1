-- Offer a queued request to the nearest suitable squad in one call: the candidate search
-- (lib/candidates.lua) and the claim (lib/claim.lua) of the nearest. Redis's GEO distance is
-- spherical; the ranking rule is geodesic (server.assign.ranking). The two orders agree
-- unless the two nearest are within ARGV[20] of each other (a near-tie): then nothing is
-- claimed and the candidates are returned for the caller to rank and claim (claim.lua).
-- KEYS[1..10] as claim.lua: request, queue, available, free, tried, timers, events, timeline,
--   assignment, stats  KEYS[11] geo  KEYS[12] skills  KEYS[13] fix_times
-- ARGV[1..11] as claim.lua: request id, assignment id, now (ms), respond_by (ms), offer body,
--   events maxlen, outbox retention, state required, state after, event, offer timer member
-- ARGV[12..19] as candidates.lua ARGV[1..8]: lon, lat, first radius km, count, category,
--   oldest fix, how many, largest radius km
-- ARGV[20] near-tie margin (a fraction of the nearest's distance)
-- ARGV[21] ARGV[22] ARGV[23] the squad hash, outbox and jobs keys of squad '\0' (a squad's
--   keys are these with its id in place of '\0': the formats stay in server.store.keys)
-- Returns {'ok', squad, seq, hub, version} | {'stale', state} | {'none'} (no candidate)
--       | {'tie', id, lon, lat, id, lon, lat, ...}
--#include lib/outbox_append.lua
--#include lib/record_event.lua
--#include lib/candidates.lua
--#include lib/claim.lua
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= ARGV[8] then return {'stale', state or ''} end
local found = find_candidates(
  {geo = KEYS[11], available = KEYS[3], free = KEYS[4], skills = KEYS[12], fix_times = KEYS[13]},
  ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[16], ARGV[17], ARGV[18], ARGV[19])
if #found == 0 then return {'none'} end
if #found > 1 and found[2][2] <= found[1][2] * (1 + tonumber(ARGV[20])) then
  return flat_candidates(found, {'tie'})
end
local function squad_key(template, id)
  local at = string.find(template, '\0', 1, true)
  return string.sub(template, 1, at - 1) .. id .. string.sub(template, at + 1)
end
local nearest = found[1][1]
local k, a = claim_request()
return claim_offer(k, a, {nearest}, function()
  return squad_key(ARGV[21], nearest), squad_key(ARGV[22], nearest), squad_key(ARGV[23], nearest)
end)
