-- Claim due timers with a lease: each returned timer is pushed lease_ms into the future, so
-- if the claiming process dies before finishing it, another process claims it then. The
-- finisher removes the timer (ZREM); handlers are idempotent.
-- KEYS[1] timers
-- ARGV[1] now (epoch ms)  ARGV[2] lease (ms)  ARGV[3] at most this many
-- Returns the claimed members and the times they were due: {member, due_ms, member, ...}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[2])
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], until_ms, due[i])
end
return due
