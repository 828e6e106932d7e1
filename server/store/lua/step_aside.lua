-- A draining hub's slice of phones steps aside just before it is told to reconnect elsewhere
-- (close 1012): out of the unit's available set, so no new offer goes to a phone about to be
-- closed. Each squad stays online and on duty with its offers, jobs, position and timers as
-- they are (outstanding offers are replayed on resume); its hello on another hub
-- (connect.lua) makes it a candidate again, and clears the mark that keeps duty.lua from
-- making it one before.
-- KEYS[1] available  KEYS[2..] squad hashes, in ARGV order
-- ARGV[1] hub id  ARGV[2..] squad ids
-- Returns how many squads stepped aside (a squad already connected to another hub, or
-- offline, is left alone).
local stepped = 0
for i = 2, #ARGV do
  local squad = KEYS[i]
  if redis.call('HGET', squad, 'hub') == ARGV[1] and redis.call('HGET', squad, 'online') == '1' then
    redis.call('HSET', squad, 'aside', '1')
    redis.call('SREM', KEYS[1], ARGV[i])
    stepped = stepped + 1
  end
end
return stepped
