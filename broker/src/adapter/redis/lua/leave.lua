-- A presence leave (one connection of the user).
-- KEYS as join.lua. ARGV[1] share field, ARGV[2] user id, ARGV[3] events channel,
-- ARGV[4] member_removed message, ARGV[5] held-back member_removed key ('' when the app
-- has no webhooks), ARGV[6] debounce window in milliseconds.
-- On the user's last connection the member_removed is published in the same step, and
-- its webhook is held back for the window (a join within it cancels both).
-- Returns 1 when it was the user's last connection.
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
local c = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if c <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  if ARGV[5] ~= '' then
    local t = redis.call('TIME')
    redis.call('ZADD', KEYS[4], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[6]), ARGV[5])
  end
  return 1
end
return 0
