-- The frames kept, not yet acknowledged, in the outboxes of one unit's squads: a metric
-- (dispatch_outbox_frames), sampled every few seconds. One call per unit instead of a ZCARD
-- per squad: with 10,000 squads on a hub, the sample was a 10,000-command pipeline that the
-- hub packed and parsed in one go, holding its loop for tens of milliseconds.
-- KEYS[1..] the squads' outboxes (sorted sets), all of one unit (one hash slot)
-- Returns the sum of their sizes.
local frames = 0
for i = 1, #KEYS do
  frames = frames + redis.call('ZCARD', KEYS[i])
end
return frames
