-- Cumulative acknowledgement: drop every kept frame up to seq.
-- KEYS[1] squad hash  KEYS[2] outbox
-- ARGV[1] seq
-- Returns the acknowledged seq now recorded (never moves backwards, never past the last sent).
local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local seq = math.min(tonumber(ARGV[1]), last)
local acked = tonumber(redis.call('HGET', KEYS[1], 'acked') or '0')
if seq > acked then
  redis.call('HSET', KEYS[1], 'acked', seq)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', seq)
  return seq
end
return acked
