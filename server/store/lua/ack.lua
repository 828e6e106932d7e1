-- Cumulative acknowledgement: drop every kept frame up to seq.
-- KEYS[1] squad hash  KEYS[2] outbox
-- ARGV[1] seq
-- Returns the acknowledged seq now recorded (never moves backwards, never past the last sent).
--#include lib/outbox_ack.lua
return outbox_ack(KEYS[1], KEYS[2], ARGV[1])
