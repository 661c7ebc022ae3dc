-- A presence leave (one connection of the user). KEYS as join.lua.
-- ARGV[1] share field, ARGV[2] user id, ARGV[3] 'PUBLISH' or 'SPUBLISH', ARGV[4] the
-- channel's topic, ARGV[5] the member_removed message, ARGV[6] '1' when the app has
-- webhooks ('' if not), ARGV[7] debounce window in milliseconds.
-- On the user's last connection the member_removed is published in the same step, and
-- its webhook is held back for the window (a join within it cancels both).
-- Returns {1 when it was the user's last connection, due time of the held-back webhook (0: none)}.
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
local c = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if c <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call(ARGV[3], ARGV[4], ARGV[5])
  local due = 0
  if ARGV[6] ~= '' then
    local t = redis.call('TIME')
    due = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[7])
    redis.call('ZADD', KEYS[4], due, 'r' .. ARGV[2])
  end
  return {1, due}
end
return {0, 0}
