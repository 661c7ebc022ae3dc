-- Takes up to ARGV[1] held-back webhooks whose window has passed, so exactly one node
-- sends each. KEYS[1] held-back webhooks (member -> due time in milliseconds).
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do redis.call('ZREM', KEYS[1], m) end
return due
