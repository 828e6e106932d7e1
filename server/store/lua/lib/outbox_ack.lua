-- Cumulative acknowledgement of a squad's outbox: drop every kept frame up to ``seq``.
-- Returns the acknowledged seq now recorded (never moves backwards, never past the last sent).
local function outbox_ack(squad_key, outbox_key, seq)
  local last = tonumber(redis.call('HGET', squad_key, 'seq') or '0')
  seq = math.min(tonumber(seq), last)
  local acked = tonumber(redis.call('HGET', squad_key, 'acked') or '0')
  if seq > acked then
    redis.call('HSET', squad_key, 'acked', seq)
    redis.call('ZREMRANGEBYSCORE', outbox_key, '-inf', seq)
    return seq
  end
  return acked
end
