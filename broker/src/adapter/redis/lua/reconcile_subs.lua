-- Sets a node's share of a channel's subscriptions to ARGV[2], moving the cluster count
-- by the difference. KEYS as adjust.lua.
-- ARGV[1] node id, ARGV[2] its subscriptions now, ARGV[3] '1' when the app has webhooks
-- ('' if not), ARGV[4] debounce window in milliseconds.
-- Returns {cluster subscriptions before, after, 1 if a held-back channel_vacated was
-- cancelled, due time of a channel_vacated held back now (0: none)}.
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local new = tonumber(ARGV[2])
if new > 0 then redis.call('HSET', KEYS[2], ARGV[1], new) else redis.call('HDEL', KEYS[2], ARGV[1]) end
local before = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = before
if new ~= old then t = redis.call('INCRBY', KEYS[1], new - old) end
local cancelled, due = 0, 0
if t <= 0 then
  redis.call('DEL', KEYS[1])
  if before > 0 and ARGV[3] ~= '' then
    local now = redis.call('TIME')
    due = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[4])
    redis.call('ZADD', KEYS[3], due, 'v')
  end
elseif before <= 0 and ARGV[3] ~= '' then
  cancelled = redis.call('ZREM', KEYS[3], 'v')
end
return {before, t, cancelled, due}
