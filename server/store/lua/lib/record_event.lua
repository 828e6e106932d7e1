-- Record a request's event: on its timeline (the request's history, kept with it) and in the
-- unit's event stream (read by the ledger and the center's feed), trimmed to about maxlen.
local function record_event(timeline_key, events_key, maxlen, event)
  redis.call('RPUSH', timeline_key, event)
  redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'e', event)
end
