-- The links of a chain to skip right now, in one step for the whole chain.
--
-- KEYS[1] cooldowns hash, then (if ARGV[4] is '1') a guard key, then the circuit breaker of
-- each deployment
-- ARGV[1] now, ARGV[2] probe lease (s), ARGV[3] '1' to honour cooldowns, ARGV[4] '1' when a
-- guard key is given, ARGV[4 + i] deployment i
--
-- The guard is the reservation record of the call this check is for, sent right behind its
-- admission: if the admission refused the call, the record does not exist and nothing is
-- checked (the reply is nil), so a refused call never takes a probe.
--
-- A breaker hash has `state` (open | half_open; no hash = closed), `until` (open: when the
-- probe may start; half_open: when the probe's lease runs out) and `failures`.
-- Past its open period a circuit admits exactly one probe, and only when it is the first link
-- the caller can use: links further down are reached only if that one fails, so granting them
-- a probe here would hold their slot for a call that may never be made.
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local first_breaker = 2
if ARGV[4] == '1' then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    return nil
  end
  first_breaker = 3
end
local count = #KEYS - first_breaker + 1
local cooldowns = {}
if ARGV[3] == '1' then
  cooldowns = redis.call('HMGET', KEYS[1], unpack(ARGV, 5, 4 + count))
end
local skip = {}
local probes = {}
local usable_found = false
for i = 1, count do
  local deployment = ARGV[4 + i]
  local key = KEYS[first_breaker + i - 1]
  local cooling = cooldowns[i] and tonumber(cooldowns[i]) > now
  local breaker = redis.call('HMGET', key, 'state', 'until')
  local state, until_ = breaker[1], tonumber(breaker[2])
  if cooling then
    table.insert(skip, deployment)
  elseif not state then
    usable_found = true
  elseif now < until_ or usable_found then
    table.insert(skip, deployment)
  else
    redis.call('HSET', key, 'state', 'half_open', 'until', string.format('%.17g', now + lease))
    table.insert(probes, deployment)
    usable_found = true
  end
end
return {skip, probes}
