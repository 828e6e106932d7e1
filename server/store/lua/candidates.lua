-- Nearest squads of a unit that could take a request now, nearest first (GEO distance; see
-- lib/candidates.lua).
-- KEYS[1] geo  KEYS[2] available  KEYS[3] free  KEYS[4] skills  KEYS[5] fix_times
-- ARGV[1] lon  ARGV[2] lat  ARGV[3] first radius km  ARGV[4] positions examined first (COUNT)
-- ARGV[5] category ('*': any squad, whatever its skills)  ARGV[6] oldest acceptable fix (epoch s)
-- ARGV[7] how many to return  ARGV[8] largest radius km
-- Returns a flat list: id, lon, lat, id, lon, lat, ...
--#include lib/candidates.lua
local found = find_candidates(
  {geo = KEYS[1], available = KEYS[2], free = KEYS[3], skills = KEYS[4], fix_times = KEYS[5]},
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return flat_candidates(found, {})
