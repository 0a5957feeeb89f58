-- The links of a chain to skip right now, in one step for the whole chain.
--
-- KEYS[1] cooldowns hash, KEYS[1 + i] circuit breaker of deployment i
-- ARGV[1] now, ARGV[2] probe lease (s), ARGV[3] '1' to honour cooldowns, ARGV[3 + i] deployment i
--
-- A breaker hash has `state` (open | half_open; no hash = closed), `until` (open: when the
-- probe may start; half_open: when the probe's lease runs out) and `failures`.
-- Past its open period a circuit admits exactly one probe, and only when it is the first link
-- the caller can use: links further down are reached only if that one fails, so granting them
-- a probe here would hold their slot for a call that may never be made.
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local cooldowns = {}
if ARGV[3] == '1' then
  cooldowns = redis.call('HMGET', KEYS[1], unpack(ARGV, 4))
end
local skip = {}
local probes = {}
local usable_found = false
for i = 1, #KEYS - 1 do
  local deployment = ARGV[3 + i]
  local cooling = cooldowns[i] and tonumber(cooldowns[i]) > now
  local breaker = redis.call('HMGET', KEYS[1 + i], 'state', 'until')
  local state, until_ = breaker[1], tonumber(breaker[2])
  if cooling then
    table.insert(skip, deployment)
  elseif not state then
    usable_found = true
  elseif now < until_ or usable_found then
    table.insert(skip, deployment)
  else
    redis.call('HSET', KEYS[1 + i], 'state', 'half_open', 'until', string.format('%.17g', now + lease))
    table.insert(probes, deployment)
    usable_found = true
  end
end
return {skip, probes}
