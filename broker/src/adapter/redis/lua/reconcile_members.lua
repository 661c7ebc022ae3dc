-- Sets this node's (or a dead node's) share of a presence user's connections to ARGV[3].
-- KEYS as join.lua. ARGV[1] share field, ARGV[2] user id, ARGV[3] connections now,
-- ARGV[4] user_info (when ARGV[3] > 0), ARGV[5] events channel, ARGV[6] member_removed
-- message, ARGV[7] member_added message, ARGV[8] held-back member_removed key ('' when
-- the app has no webhooks), ARGV[9] debounce window in milliseconds.
-- A user who leaves or comes back through this is announced here, like a leave or a join.
-- Returns {the user's connections before, after, 1 if a held-back member_removed was cancelled}.
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local new = tonumber(ARGV[3])
if new > 0 then redis.call('HSET', KEYS[1], ARGV[1], new) else redis.call('HDEL', KEYS[1], ARGV[1]) end
local before = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local t = before
if new ~= old then t = redis.call('HINCRBY', KEYS[2], ARGV[2], new - old) end
local cancelled = 0
if t <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  if before > 0 then
    redis.call('PUBLISH', ARGV[5], ARGV[6])
    if ARGV[8] ~= '' then
      local now = redis.call('TIME')
      redis.call('ZADD', KEYS[4], now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[9]), ARGV[8])
    end
  end
else
  if new > 0 then redis.call('HSET', KEYS[3], ARGV[2], ARGV[4]) end
  if before <= 0 then
    redis.call('PUBLISH', ARGV[5], ARGV[7])
    if ARGV[8] ~= '' then cancelled = redis.call('ZREM', KEYS[4], ARGV[8]) end
  end
end
return {before, t, cancelled}
