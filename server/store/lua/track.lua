-- Append position samples to the tracks of the squads that hold work (an offer or an
-- assignment): the GEO set keeps only the latest fix, the center's map wants the way there.
-- KEYS[2i-1] squad i's jobs set  KEYS[2i] squad i's track stream (all of one unit)
-- ARGV[1] the most points a track keeps (approximate trim)  ARGV[2] seconds a track is kept
-- after its last point  ARGV[2+i] squad i's position, "lat,lon"
-- Returns the number of points appended (a squad holding no work gets none).
local keep, ttl = ARGV[1], tonumber(ARGV[2])
local appended = 0
for i = 1, #KEYS / 2 do
  if redis.call('SCARD', KEYS[2 * i - 1]) > 0 then
    local track = KEYS[2 * i]
    redis.call('XADD', track, 'MAXLEN', '~', keep, '*', 'p', ARGV[2 + i])
    redis.call('EXPIRE', track, ttl)
    appended = appended + 1
  end
end
return appended
