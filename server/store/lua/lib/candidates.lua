-- Nearest squads of a unit that could take a request now, nearest first (GEO distance).
-- GEOSEARCH sorts every member inside the radius, so the search starts small and widens (4x
-- the radius, up to the largest; 8x the count within a radius) only while it has found fewer
-- than wanted: near squads are often enough, and often all busy in a large fleet. Results of
-- a smaller search are a prefix of a larger one (same centre, ascending distance).
-- k: {geo, available, free, skills, fix_times}; lon, lat: the scene; first_radius, max_radius
-- (km); count: positions examined first (0: all); category ('*': any squad, whatever its
-- skills); min_fix: oldest acceptable fix (epoch s); want: how many to return.
-- Returns a list of {id, distance km, lon, lat}.
local function find_candidates(k, lon, lat, first_radius, count, category, min_fix, want,
                               max_radius)
  min_fix, want, count = tonumber(min_fix), tonumber(want), tonumber(count)
  local needle = ',' .. category .. ','
  local radius, largest = tonumber(first_radius), tonumber(max_radius)
  local out, seen = {}, 0
  while true do
    local args = {k.geo, 'FROMLONLAT', lon, lat, 'BYRADIUS', radius, 'km', 'ASC'}
    if count > 0 then
      args[#args + 1] = 'COUNT'
      args[#args + 1] = count
    end
    args[#args + 1] = 'WITHDIST'
    args[#args + 1] = 'WITHCOORD'
    local found = redis.call('GEOSEARCH', unpack(args))
    for i = seen + 1, #found do
      local item = found[i]
      local id = item[1]
      if redis.call('SISMEMBER', k.available, id) == 1
        and tonumber(redis.call('HGET', k.free, id) or '0') > 0
        and tonumber(redis.call('ZSCORE', k.fix_times, id) or '0') >= min_fix then
        local skills = redis.call('HGET', k.skills, id) or '*'
        if category == '*' or skills == '*' or string.find(skills, needle, 1, true) then
          out[#out + 1] = {id, tonumber(item[2]), item[3][1], item[3][2]}
          if #out >= want then return out end
        end
      end
    end
    seen = #found
    if count > 0 and #found >= count then
      count = count * 8  -- more inside this radius
      if count > 50000 then count = 0 end
    elseif radius < largest then
      radius = math.min(radius * 4, largest)
    else
      return out
    end
  end
end

-- Append each candidate's id, lon, lat to ``out`` (the flat reply callers parse with
-- server.assign.ranking.parse_candidates); returns ``out``.
local function flat_candidates(found, out)
  for _, c in ipairs(found) do
    out[#out + 1] = c[1]
    out[#out + 1] = c[3]
    out[#out + 1] = c[4]
  end
  return out
end
