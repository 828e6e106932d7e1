-- Write one unit's batch of position fixes: the GEO index, then the fix times of the fixes
-- the index took (a squad whose position Redis refused must not look freshly placed at its
-- old spot). Redis refuses a whole GEOADD for one bad pair, so a refused chunk is written
-- again fix by fix, and one bad fix costs only itself.
-- KEYS[1] geo  KEYS[2] fix_times
-- ARGV: n fixes as lon, lat, id (3n values), then the same n fixes as time, id (2n values)
-- Returns {fixes placed, the last refusal's error ('' none), refused id, refused id, ...}
local n = #ARGV / 5
local times = 3 * n  -- ARGV[times + 1] is the first fix's time
local CHUNK = 1000  -- fixes per GEOADD: unpack is bounded by Lua's C stack (8,000 values)
local out = {0, ''}  -- fixes placed, the last refusal's error, then the refused ids
for first = 0, n - 1, CHUNK do
  local last = math.min(first + CHUNK, n) - 1
  local added = redis.pcall('GEOADD', KEYS[1], unpack(ARGV, first * 3 + 1, last * 3 + 3))
  if type(added) ~= 'table' then
    redis.call('ZADD', KEYS[2], unpack(ARGV, times + first * 2 + 1, times + last * 2 + 2))
    out[1] = out[1] + last - first + 1
  else
    for i = first, last do
      local at = i * 3 + 1
      local one = redis.pcall('GEOADD', KEYS[1], ARGV[at], ARGV[at + 1], ARGV[at + 2])
      if type(one) == 'table' then
        out[#out + 1] = ARGV[at + 2]
        out[2] = one.err or ''
      else
        redis.call('ZADD', KEYS[2], ARGV[times + i * 2 + 1], ARGV[times + i * 2 + 2])
        out[1] = out[1] + 1
      end
    end
  end
end
return out
