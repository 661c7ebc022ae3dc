-- Moves a channel's subscription count by ARGV[3] (+1 or -1).
-- KEYS[1] this node's share of subscriptions, KEYS[2] the app's channels (channel ->
-- subscriptions), KEYS[3] held-back webhooks.
-- ARGV[1] share field, ARGV[2] channel, ARGV[3] delta, ARGV[4] held-back channel_vacated
-- key ('' when the app has no webhooks), ARGV[5] debounce window in milliseconds.
-- Returns {cluster subscriptions after the change, 1 if a held-back channel_vacated was
-- cancelled by this occupation}.
local delta = tonumber(ARGV[3])
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], delta)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
local t = redis.call('HINCRBY', KEYS[2], ARGV[2], delta)
local cancelled = 0
if t <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  if delta < 0 and ARGV[4] ~= '' then
    local now = redis.call('TIME')
    redis.call('ZADD', KEYS[3], now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[5]), ARGV[4])
  end
elseif delta > 0 and t - delta <= 0 and ARGV[4] ~= '' then
  cancelled = redis.call('ZREM', KEYS[3], ARGV[4])
end
return {t, cancelled}
