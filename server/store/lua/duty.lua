-- A squad goes on or off duty. Available = on duty and online (on this connection), and not
-- stepped aside (step_aside.lua: its draining hub is about to send it elsewhere).
-- KEYS[1] squad hash  KEYS[2] available
-- ARGV[1] squad id  ARGV[2] '1' on / '0' off  ARGV[3] connection id
-- Returns 1 if the squad is now available, 0 if not, -1 if the connection no longer owns it.
if redis.call('HGET', KEYS[1], 'conn') ~= ARGV[3] then return -1 end
redis.call('HSET', KEYS[1], 'duty', ARGV[2])
if ARGV[2] == '1' and redis.call('HGET', KEYS[1], 'online') == '1'
  and redis.call('HEXISTS', KEYS[1], 'aside') == 0 then
  redis.call('SADD', KEYS[2], ARGV[1])
  return 1
end
redis.call('SREM', KEYS[2], ARGV[1])
return 0
