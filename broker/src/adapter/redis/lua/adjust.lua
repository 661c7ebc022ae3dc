-- Moves a channel's subscription count by ARGV[2] (+1 or -1). Every key is the channel's
-- (one slot). KEYS[1] the cluster's subscriptions, KEYS[2] each node's share (node ->
-- subscriptions), KEYS[3] held-back webhooks.
-- ARGV[1] node id, ARGV[2] delta, ARGV[3] '1' when the app has webhooks ('' if not),
-- ARGV[4] debounce window in milliseconds.
-- Returns {cluster subscriptions after the change, 1 if a held-back channel_vacated was
-- cancelled by this occupation, the due time of a channel_vacated held back now (0: none)}.
local delta = tonumber(ARGV[2])
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], delta)
if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
local t = redis.call('INCRBY', KEYS[1], delta)
local cancelled, due = 0, 0
if t <= 0 then
  redis.call('DEL', KEYS[1])
  if delta < 0 and ARGV[3] ~= '' then
    local now = redis.call('TIME')
    due = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[4])
    redis.call('ZADD', KEYS[3], due, 'v')
  end
elseif delta > 0 and t - delta <= 0 and ARGV[3] ~= '' then
  cancelled = redis.call('ZREM', KEYS[3], 'v')
end
return {t, cancelled, due}
