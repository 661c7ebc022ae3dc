-- Publishes one message on a channel's topic and says whether every node holding a
-- share of the channel heard it. KEYS[1] the channel's shares (node -> subscriptions).
-- ARGV[1] 'PUBLISH' or 'SPUBLISH', ARGV[2] the topic, ARGV[3] the message.
-- A node listens to the topic before its share is written and stops only after its
-- share is removed, so fewer listeners than shares means some node missed it (it lost
-- its connection, or died and is not cleaned up yet).
-- Returns {listeners that received it, nodes holding a share}.
local heard = redis.call(ARGV[1], ARGV[2], ARGV[3])
return {heard, redis.call('HLEN', KEYS[1])}
