-- Append a numbered frame to a squad's outbox, keeping the newest ``keep`` frames; the highest
-- dropped seq is remembered in the squad hash ('trimmed'), so a resume from before it gets a
-- resync instead of a silent gap. Returns the frame's seq.
local function outbox_append(squad_key, outbox_key, body, keep)
  local seq = redis.call('HINCRBY', squad_key, 'seq', 1)
  redis.call('ZADD', outbox_key, seq, string.format('%012d', seq) .. body)
  local excess = redis.call('ZCARD', outbox_key) - tonumber(keep)
  if excess > 0 then
    local dropped = redis.call('ZRANGE', outbox_key, excess - 1, excess - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', outbox_key, 0, excess - 1)
    redis.call('HSET', squad_key, 'trimmed', dropped[2])
  end
  return seq
end
