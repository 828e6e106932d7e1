-- A squad's connection ended (or its hub process died): mark it offline, unless a newer
-- connection already took over, and start its offline timers, in one round trip.
-- KEYS[1] squad hash  KEYS[2] available  KEYS[3] geo  KEYS[4] the unit's timers
-- ARGV[1] squad id  ARGV[2] connection id, or hub id  ARGV[3] now (epoch s)
-- ARGV[4] 'conn' or 'hub': which field ARGV[2] must match
-- ARGV[5] the offline timer's member  ARGV[6] when it fires (epoch ms)
-- ARGV[7] the alert timer's member  ARGV[8] when it fires (epoch ms)
-- Returns 1 if the squad went offline, 0 if another connection owns it now.
if redis.call('HGET', KEYS[1], ARGV[4]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'online', '0', 'hub', '', 'conn', '', 'last_seen', ARGV[3] or '')
redis.call('HDEL', KEYS[1], 'aside')
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[5], ARGV[8], ARGV[7])
return 1
