-- Write one unit's batch of position fixes: the GEO index, then the fix times of the fixes
-- the index took (a squad whose position Redis refused must not look freshly placed at its
-- old spot). Redis refuses a whole GEOADD for one bad pair, so a refused chunk is written
-- again fix by fix, and one bad fix costs only itself.
-- The fixes come as binary doubles: the hub then packs no number as text (the costliest
-- part of a fix in Python); Redis formats them here, exactly ('%.17g' round-trips).
-- KEYS[1] geo  KEYS[2] fix_times
-- ARGV[1] n fixes as little-endian doubles lon, lat, time (24 bytes a fix)
-- ARGV[2 .. n + 1] the fixes' squad ids, in the same order
-- Returns {fixes placed, the last refusal's error ('' none), refused id, refused id, ...}
local blob, n = ARGV[1], #ARGV - 1
local CHUNK = 1000  -- fixes per GEOADD: unpack is bounded by Lua's C stack (8,000 values)
local out = {0, ''}  -- fixes placed, the last refusal's error, then the refused ids
for first = 0, n - 1, CHUNK do
  local last = math.min(first + CHUNK, n) - 1
  local places, times = {}, {}
  for i = first, last do
    local lon, lat, at = struct.unpack('<ddd', blob, i * 24 + 1)
    local id = ARGV[i + 2]
    places[#places + 1] = lon
    places[#places + 1] = lat
    places[#places + 1] = id
    times[#times + 1] = at
    times[#times + 1] = id
  end
  if type(redis.pcall('GEOADD', KEYS[1], unpack(places))) ~= 'table' then
    redis.call('ZADD', KEYS[2], unpack(times))
    out[1] = out[1] + last - first + 1
  else
    for j = 1, #places, 3 do
      local one = redis.pcall('GEOADD', KEYS[1], places[j], places[j + 1], places[j + 2])
      if type(one) == 'table' then
        out[#out + 1] = places[j + 2]
        out[2] = one.err or ''
      else
        local t = (j - 1) / 3 * 2 + 1
        redis.call('ZADD', KEYS[2], times[t], times[t + 1])
        out[1] = out[1] + 1
      end
    end
  end
end
return out
