-- Queue a message to a caller's phone once per idempotency key, and record it in the unit's
-- event stream, atomically (see lib/citizen_enqueue.lua).
-- KEYS[1] the request's messages (hash)  KEYS[2] due requests (sorted set)
-- KEYS[3] the unit's events (stream)
-- ARGV[1] idempotency key  ARGV[2] request id  ARGV[3] now (epoch ms)  ARGV[4] the message
-- (JSON)  ARGV[5] the citizen_message_queued event (JSON)  ARGV[6] events maxlen
-- Returns the message's number in the request (1, 2, ...), 0 if the key was queued before.
--#include lib/citizen_enqueue.lua
return citizen_enqueue(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                       ARGV[6])
