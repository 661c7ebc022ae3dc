-- Sets this node's (or a dead node's) share of a channel's subscriptions to ARGV[3],
-- moving the cluster count by the difference.
-- KEYS and ARGV[1], ARGV[2], ARGV[4], ARGV[5] as adjust.lua.
-- Returns {cluster subscriptions before, after, 1 if a held-back channel_vacated was cancelled}.
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local new = tonumber(ARGV[3])
if new > 0 then redis.call('HSET', KEYS[1], ARGV[1], new) else redis.call('HDEL', KEYS[1], ARGV[1]) end
local before = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local t = before
if new ~= old then t = redis.call('HINCRBY', KEYS[2], ARGV[2], new - old) end
local cancelled = 0
if t <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  if before > 0 and ARGV[4] ~= '' then
    local now = redis.call('TIME')
    redis.call('ZADD', KEYS[3], now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[5]), ARGV[4])
  end
elseif before <= 0 and ARGV[4] ~= '' then
  cancelled = redis.call('ZREM', KEYS[3], ARGV[4])
end
return {before, t, cancelled}
