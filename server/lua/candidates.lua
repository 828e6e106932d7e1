-- Nearest squads of a unit that could take a request now, nearest first (GEO distance).
-- KEYS[1] geo  KEYS[2] available  KEYS[3] free  KEYS[4] skills  KEYS[5] fix_times
-- ARGV[1] lon  ARGV[2] lat  ARGV[3] radius km  ARGV[4] positions examined (COUNT)
-- ARGV[5] category  ARGV[6] oldest acceptable fix (epoch s)  ARGV[7] how many to return
-- Returns a flat list: id, lon, lat, id, lon, lat, ...
local found = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2],
  'BYRADIUS', ARGV[3], 'km', 'ASC', 'COUNT', ARGV[4], 'WITHCOORD')
local min_fix = tonumber(ARGV[6])
local want = tonumber(ARGV[7])
local needle = ',' .. ARGV[5] .. ','
local out = {}
for _, item in ipairs(found) do
  local id = item[1]
  if redis.call('SISMEMBER', KEYS[2], id) == 1
    and tonumber(redis.call('HGET', KEYS[3], id) or '0') > 0
    and tonumber(redis.call('ZSCORE', KEYS[5], id) or '0') >= min_fix then
    local skills = redis.call('HGET', KEYS[4], id) or '*'
    if skills == '*' or string.find(skills, needle, 1, true) then
      out[#out + 1] = id
      out[#out + 1] = item[2][1]
      out[#out + 1] = item[2][2]
      if #out >= want * 3 then break end
    end
  end
end
return out
