-- Nearest squads of a unit that could take a request now, nearest first (GEO distance).
-- KEYS[1] geo  KEYS[2] available  KEYS[3] free  KEYS[4] skills  KEYS[5] fix_times
-- ARGV[1] lon  ARGV[2] lat  ARGV[3] radius km  ARGV[4] positions examined first (COUNT)
-- ARGV[5] category  ARGV[6] oldest acceptable fix (epoch s)  ARGV[7] how many to return
-- Returns a flat list: id, lon, lat, id, lon, lat, ...
-- The search widens (8x the count, then everyone in the radius) while it finds fewer than
-- wanted and there may be more: near squads are often all busy in a large fleet.
local min_fix = tonumber(ARGV[6])
local want = tonumber(ARGV[7])
local needle = ',' .. ARGV[5] .. ','
local count = tonumber(ARGV[4])
local out, seen = {}, 0
while true do
  local args = {KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2], 'BYRADIUS', ARGV[3], 'km', 'ASC'}
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
      if skills == '*' or string.find(skills, needle, 1, true) then
        out[#out + 1] = id
        out[#out + 1] = item[2][1]
        out[#out + 1] = item[2][2]
        if #out >= want * 3 then return out end
      end
    end
  end
  if count == 0 or #found < count then return out end
  seen = #found
  count = count * 8
  if count > 50000 then count = 0 end
end
