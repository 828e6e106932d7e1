-- A squad's connection ended (or its hub process died): mark it offline, unless a newer
-- connection already took over.
-- KEYS[1] squad hash  KEYS[2] available  KEYS[3] geo
-- ARGV[1] squad id  ARGV[2] connection id, or hub id  ARGV[3] now (epoch s)
-- ARGV[4] 'conn' or 'hub': which field ARGV[2] must match
-- Returns 1 if the squad went offline, 0 if another connection owns it now.
if redis.call('HGET', KEYS[1], ARGV[4]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'online', '0', 'hub', '', 'conn', '', 'last_seen', ARGV[3] or '')
redis.call('HDEL', KEYS[1], 'aside')
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
