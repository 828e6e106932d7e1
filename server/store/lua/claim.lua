-- Carry out an offer decided by server.lifecycle with the first eligible candidate (see
-- lib/claim.lua).
-- KEYS[1] request  KEYS[2] queue  KEYS[3] available  KEYS[4] free  KEYS[5] tried
-- KEYS[6] timers  KEYS[7] events  KEYS[8] timeline  KEYS[9] assignment  KEYS[10] stats
-- KEYS[11..] three per candidate, in ARGV order: squad hash, outbox, jobs
-- ARGV[1] request id  ARGV[2] assignment id  ARGV[3] now (epoch ms)  ARGV[4] respond_by (ms)
-- ARGV[5] offer body (MessagePack, seq omitted)  ARGV[6] events maxlen
-- ARGV[7] outbox retention (frames)  ARGV[8] state required  ARGV[9] state after
-- ARGV[10] event name  ARGV[11] offer timer member (server.store.timers)
-- ARGV[12..] candidate squad ids
-- Returns {'ok', squad, seq, hub, version} | {'stale', state} | {'none'}
--#include lib/outbox_append.lua
--#include lib/record_event.lua
--#include lib/claim.lua
local ids = {}
for i = 12, #ARGV do ids[#ids + 1] = ARGV[i] end
local k, a = claim_request()
return claim_offer(k, a, ids, function(i)
  local base = 10 + (i - 1) * 3
  return KEYS[base + 1], KEYS[base + 2], KEYS[base + 3]
end)
