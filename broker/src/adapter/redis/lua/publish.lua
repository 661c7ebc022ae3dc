-- Publishes one message on a channel's topic and says whether every node holding a
-- share of the channel heard it. KEYS[1] the channel's shares (node -> subscriptions).
-- ARGV[1] 'PUBLISH' or 'SPUBLISH', ARGV[2] the topic, ARGV[3] the message.
-- A node listens to the topic before its share is written and stops only after its
-- share is removed, so fewer listeners than shares means some node missed it (it lost
-- its connection, or died and is not cleaned up yet).
-- Returns {listeners that received it, nodes holding a share}.
--
-- A kept event (channel history, see history.rs) also has KEYS[2] the last position,
-- KEYS[3] the stream of kept events, KEYS[4] the epoch; ARGV[3] is then the message's
-- header line (JSON, without its position), ARGV[4] the frame, ARGV[5] the excluded
-- socket id ('' for none), ARGV[6] max_events, ARGV[7] max_age_secs, ARGV[8] a fresh
-- epoch to use if the channel has none (first event, expired, or Redis lost its data).
-- The position is assigned, kept and published in this one step, so every node
-- receives a channel's kept events in position order. Returns {heard, shares, position}.
if #KEYS == 1 then
  local heard = redis.call(ARGV[1], ARGV[2], ARGV[3])
  return {heard, redis.call('HLEN', KEYS[1])}
end
local ttl = tonumber(ARGV[7])
if redis.call('SET', KEYS[4], ARGV[8], 'NX', 'EX', ttl) then
  -- A new epoch: positions start again; anything left over belonged to a lost one.
  redis.call('DEL', KEYS[2], KEYS[3])
else
  redis.call('EXPIRE', KEYS[4], ttl)
end
local position = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[6], position .. '-0', 'f', ARGV[4], 'x', ARGV[5], 't', ms)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
local message = string.sub(ARGV[3], 1, -2) .. ',"p":' .. position .. '}\n' .. ARGV[4]
local heard = redis.call(ARGV[1], ARGV[2], message)
return {heard, redis.call('HLEN', KEYS[1]), position}
