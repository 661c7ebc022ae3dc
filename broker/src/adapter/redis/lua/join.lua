-- A presence join, decided once for the whole cluster. Every key is the channel's (one slot).
-- KEYS[1] each node's share of each member's connections, KEYS[2] the members (user ->
-- connections), KEYS[3] the user infos, KEYS[4] held-back webhooks.
-- ARGV[1] share field (node, user), ARGV[2] user id, ARGV[3] user_info, ARGV[4] most
-- members, ARGV[5] 'PUBLISH' or 'SPUBLISH', ARGV[6] the channel's topic, ARGV[7] the
-- member_added message, ARGV[8] header of the joiner's member list message, ARGV[9] '1'
-- when the app has webhooks ('' if not).
-- The member_added and the joiner's member list are published here on the channel's
-- topic, in the same step as the change, so every node sees member events and lists in
-- one order: whatever the list lacks reaches the joiner afterwards as an event.
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
  redis.call(ARGV[5], ARGV[6], ARGV[7])
  if ARGV[9] ~= '' then cancelled = redis.call('ZREM', KEYS[4], 'r' .. ARGV[2]) end
end
redis.call(ARGV[5], ARGV[6], ARGV[8] .. '\n' .. cjson.encode(redis.call('HGETALL', KEYS[3])))
return {c, cancelled}
