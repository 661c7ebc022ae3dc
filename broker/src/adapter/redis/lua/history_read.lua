-- Reads a channel's history for a resume, a rewind or a REST page (see history.rs).
-- KEYS[1] the last position, KEYS[2] the stream of kept events, KEYS[3] the epoch.
-- ARGV[1] max_age_secs, ARGV[2] a fresh epoch to start if the channel has none (as
-- publish.lua would). Returns {epoch, last position, entries oldest first}.
if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'EX', tonumber(ARGV[1])) then
  redis.call('DEL', KEYS[1], KEYS[2])
end
return {redis.call('GET', KEYS[3]), tonumber(redis.call('GET', KEYS[1]) or '0'), redis.call('XRANGE', KEYS[2], '-', '+')}
