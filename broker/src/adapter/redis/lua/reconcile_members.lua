-- Sets a node's share of a presence user's connections to ARGV[3]. KEYS as join.lua.
-- ARGV[1] share field (node, user), ARGV[2] user id, ARGV[3] connections now, ARGV[4]
-- user_info (when ARGV[3] > 0), ARGV[5] 'PUBLISH' or 'SPUBLISH', ARGV[6] the channel's
-- topic, ARGV[7] member_removed message, ARGV[8] member_added message, ARGV[9] '1' when
-- the app has webhooks ('' if not), ARGV[10] debounce window in milliseconds.
-- A user who leaves or comes back through this is announced here, like a leave or a join.
-- Returns {the user's connections before, after, 1 if a held-back member_removed was
-- cancelled, due time of a member_removed held back now (0: none)}.
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local new = tonumber(ARGV[3])
if new > 0 then redis.call('HSET', KEYS[1], ARGV[1], new) else redis.call('HDEL', KEYS[1], ARGV[1]) end
local before = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local t = before
if new ~= old then t = redis.call('HINCRBY', KEYS[2], ARGV[2], new - old) end
local cancelled, due = 0, 0
if t <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  if before > 0 then
    redis.call(ARGV[5], ARGV[6], ARGV[7])
    if ARGV[9] ~= '' then
      local now = redis.call('TIME')
      due = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[10])
      redis.call('ZADD', KEYS[4], due, 'r' .. ARGV[2])
    end
  end
else
  if new > 0 then redis.call('HSET', KEYS[3], ARGV[2], ARGV[4]) end
  if before <= 0 then
    redis.call(ARGV[5], ARGV[6], ARGV[8])
    if ARGV[9] ~= '' then cancelled = redis.call('ZREM', KEYS[4], 'r' .. ARGV[2]) end
  end
end
return {before, t, cancelled, due}
