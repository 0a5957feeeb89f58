-- Prepended to admit.lua: the links of a chain to skip right now, in one step for the whole
-- chain.
--
-- `cooldowns` and `breakers`: the cooldown key and the circuit breaker key of each deployment in
-- `deployments`, in chain order. A cooldown key holds when the deployment may be tried again.
-- A breaker hash has `state` (open | half_open; no hash = closed), `until` (open: when the
-- probe may start; half_open: when the probe's lease runs out) and `failures`.
-- Past its open period a circuit admits exactly one probe, and only when it is the first link
-- the caller can use: links further down are reached only if that one fails, so granting them
-- a probe here would hold their slot for a call that may never be made.
-- Returns {skip, probes}: deployment names.

-- One link: 'skip' (cooling down, open, or its probe taken), 'ok' (closed), 'due' (its probe may
-- start) or, with `may_probe`, 'probe' (this caller took it).
local function link_check(cooldown_key, breaker_key, now, lease, may_probe)
  local cooling = tonumber(redis.call('GET', cooldown_key) or '0') > now
  if cooling then
    return 'skip'
  end
  local breaker = redis.call('HMGET', breaker_key, 'state', 'until')
  local state, until_ = breaker[1], tonumber(breaker[2])
  if not state then
    return 'ok'
  end
  if now < until_ then
    return 'skip'
  end
  if not may_probe then
    return 'due'
  end
  redis.call('HSET', breaker_key, 'state', 'half_open', 'until', string.format('%.17g', now + lease))
  return 'probe'
end

local function chain_check(cooldowns, breakers, deployments, now, lease)
  local skip = {}
  local probes = {}
  local usable_found = false
  for i, deployment in ipairs(deployments) do
    local check = link_check(cooldowns[i], breakers[i], now, lease, not usable_found)
    if check == 'skip' or check == 'due' then
      table.insert(skip, deployment)
    else
      if check == 'probe' then
        table.insert(probes, deployment)
      end
      usable_found = true
    end
  end
  return {skip, probes}
end
