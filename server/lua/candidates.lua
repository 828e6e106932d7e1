-- Nearest squads of a unit that could take a request now, nearest first (GEO distance).
-- KEYS[1] geo  KEYS[2] available  KEYS[3] free  KEYS[4] skills  KEYS[5] fix_times
-- ARGV[1] lon  ARGV[2] lat  ARGV[3] first radius km  ARGV[4] positions examined first (COUNT)
-- ARGV[5] category ('*': any squad, whatever its skills)  ARGV[6] oldest acceptable fix (epoch s)
-- ARGV[7] how many to return  ARGV[8] largest radius km
-- Returns a flat list: id, lon, lat, id, lon, lat, ...
-- GEOSEARCH sorts every member inside the radius, so the search starts small and widens (4x
-- the radius, up to the largest; 8x the count within a radius) only while it has found fewer
-- than wanted: near squads are often enough, and often all busy in a large fleet. Results of
-- a smaller search are a prefix of a larger one (same centre, ascending distance).
local min_fix = tonumber(ARGV[6])
local want = tonumber(ARGV[7])
local needle = ',' .. ARGV[5] .. ','
local radius, max_radius = tonumber(ARGV[3]), tonumber(ARGV[8])
local count = tonumber(ARGV[4])
local out, seen = {}, 0
while true do
  local args = {KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2], 'BYRADIUS', radius, 'km', 'ASC'}
  if count > 0 then
    args[#args + 1] = 'COUNT'
    args[#args + 1] = count
  end
  args[#args + 1] = 'WITHCOORD'
  local found = redis.call('GEOSEARCH', unpack(args))
  for i = seen + 1, #found do
    local item = found[i]
    local id = item[1]
    if redis.call('SISMEMBER', KEYS[2], id) == 1
      and tonumber(redis.call('HGET', KEYS[3], id) or '0') > 0
      and tonumber(redis.call('ZSCORE', KEYS[5], id) or '0') >= min_fix then
      local skills = redis.call('HGET', KEYS[4], id) or '*'
      if ARGV[5] == '*' or skills == '*' or string.find(skills, needle, 1, true) then
        out[#out + 1] = id
        out[#out + 1] = item[2][1]
        out[#out + 1] = item[2][2]
        if #out >= want * 3 then return out end
      end
    end
  end
  seen = #found
  if count > 0 and #found >= count then
    count = count * 8  -- more inside this radius
    if count > 50000 then count = 0 end
  elseif radius < max_radius then
    radius = math.min(radius * 4, max_radius)
  else
    return out
  end
end
