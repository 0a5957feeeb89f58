-- Prepended to admit.lua: the links of a chain to skip right now, in one step for the whole
-- chain.
--
-- `breakers`: the circuit breaker key of each deployment in `deployments`, in chain order.
-- A breaker hash has `state` (open | half_open; no hash = closed), `until` (open: when the
-- probe may start; half_open: when the probe's lease runs out) and `failures`.
-- Past its open period a circuit admits exactly one probe, and only when it is the first link
-- the caller can use: links further down are reached only if that one fails, so granting them
-- a probe here would hold their slot for a call that may never be made.
-- Returns {skip, probes}: deployment names.
local function chain_check(cooldowns_key, breakers, deployments, now, lease, honour_cooldowns)
  local cooldowns = {}
  if honour_cooldowns and #deployments > 0 then
    cooldowns = redis.call('HMGET', cooldowns_key, unpack(deployments))
  end
  local skip = {}
  local probes = {}
  local usable_found = false
  for i, deployment in ipairs(deployments) do
    local key = breakers[i]
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
end
