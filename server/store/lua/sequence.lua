-- The next request number of a day. When Redis has no counter for the day, the counter is
-- created at a start the caller recovered from the ledger (server.ids.sequence_starts), in
-- the same script as the first INCR, so that concurrent processes agree on one start.
-- KEYS[1] the day's counter  KEYS[2] marker: this Redis has given out numbers before
-- ARGV[1] start if the marker exists, or '' when the caller has not asked the ledger yet
-- ARGV[2] start if the marker is missing (Redis started empty)  ARGV[3] counter TTL (s)
-- ARGV[4] how many numbers to take (a block a process hands out itself; default 1)
-- Returns the last number taken (the block is the ARGV[4] numbers up to it), or false when
-- the counter is missing and ARGV[1] is ''.
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[1] == '' then
    return false
  end
  local start = ARGV[2]
  if redis.call('EXISTS', KEYS[2]) == 1 then
    start = ARGV[1]
  end
  redis.call('SET', KEYS[1], start, 'EX', ARGV[3])
  redis.call('SET', KEYS[2], '1')
end
return redis.call('INCRBY', KEYS[1], tonumber(ARGV[4] or '1'))
