-- A presence join, decided once for the whole cluster.
-- KEYS[1] this node's share of member connections, KEYS[2] the channel's members
-- (user -> connections), KEYS[3] the channel's user infos, KEYS[4] held-back webhooks.
-- ARGV[1] share field, ARGV[2] user id, ARGV[3] user_info, ARGV[4] most members,
-- ARGV[5] events channel, ARGV[6] member_added message, ARGV[7] the joining node's inbox,
-- ARGV[8] header of the member list message, ARGV[9] held-back member_removed to cancel
-- ('' when the app has no webhooks).
-- The member_added and the joiner's member list are published here, in the same step
-- as the change, so every node sees member events and lists in one order: whatever
-- the list lacks reaches the joiner afterwards as an event.
-- Returns {the user's connections after joining (-1: channel full), 1 if a held-back
-- member_removed was cancelled (a reload: no webhook either way)}.
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
  return {-1, 0}
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local c = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
local cancelled = 0
if c == 1 then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  if ARGV[9] ~= '' then cancelled = redis.call('ZREM', KEYS[4], ARGV[9]) end
end
redis.call('PUBLISH', ARGV[7], ARGV[8] .. '\n' .. cjson.encode(redis.call('HGETALL', KEYS[3])))
return {c, cancelled}
