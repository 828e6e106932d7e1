-- A squad's connection was authenticated on this hub: mark it online here (a squad that
-- stepped aside on a draining hub, step_aside.lua, is a candidate again).
-- KEYS[1] squad hash  KEYS[2] available
-- ARGV[1] squad id  ARGV[2] hub id  ARGV[3] connection id
-- Returns {seq, acked, duty, trimmed}: the last numbered frame, the last acknowledged,
-- '1' if on duty, the highest seq dropped from the outbox unacknowledged (retention).
redis.call('HSET', KEYS[1], 'online', '1', 'hub', ARGV[2], 'conn', ARGV[3])
redis.call('HDEL', KEYS[1], 'aside')
local duty = redis.call('HGET', KEYS[1], 'duty') or '0'
if duty == '1' then redis.call('SADD', KEYS[2], ARGV[1]) end
return {redis.call('HGET', KEYS[1], 'seq') or '0', redis.call('HGET', KEYS[1], 'acked') or '0',
  duty, redis.call('HGET', KEYS[1], 'trimmed') or '0'}
