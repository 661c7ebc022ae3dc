-- Takes up to ARGV[1] of a channel's held-back webhooks whose window has passed, so
-- exactly one node sends each. KEYS[1] the channel's held-back webhooks (-> due time in ms).
-- Returns {due time of the next one still waiting (-1: none), the entries taken...}.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do redis.call('ZREM', KEYS[1], m) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local out = {tonumber(nxt[2] or '-1')}
for _, m in ipairs(due) do out[#out + 1] = m end
return out
