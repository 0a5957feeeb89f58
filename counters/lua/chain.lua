-- Prepended to admit.lua: the links of a chain to skip right now, in one step for the whole
-- chain.
--
-- A deployment's cooldown key holds when it may be tried again. Its breaker hash has `state`
-- (open | half_open; no hash = closed), `until` (open: when the probe may start; half_open: when
-- the probe's lease runs out) and `failures`.
-- Past its open period a circuit admits exactly one probe, and only when it is the first link
-- the caller can use: links further down are reached only if that one fails, so granting them
-- a probe here would hold their slot for a call that may never be made.

-- One link: 'skip' (cooling down, open, or its probe taken), 'ok' (closed), 'due' (its probe may
-- start) or, with `may_probe`, 'probe' (this caller took it).
local function link_check(cooldown_key, breaker_key, now, lease, may_probe)
  local cooling = number(redis.call('GET', cooldown_key) or '0') > now
  if cooling then
    return 'skip'
  end
  local breaker = redis.call('HMGET', breaker_key, 'state', 'until')
  if not breaker[1] then
    return 'ok'
  end
  if now < number(breaker[2]) then
    return 'skip'
  end
  if not may_probe then
    return 'due'
  end
  redis.call('HSET', breaker_key, 'state', 'half_open', 'until', string.format('%.17g', now + lease))
  return 'probe'
end

-- The chain's `links` deployments are ARGV[first_arg], ARGV[first_arg + 1]...; their cooldowns
-- KEYS[first_key]..., then their breakers (read in place: no table of a slice per call).
-- Returns skip, probes: lists of deployment names.
local function chain_check(first_key, links, first_arg, now, lease)
  local skip = {}
  local probes = {}
  local usable_found = false
  for i = 0, links - 1 do
    local deployment = ARGV[first_arg + i]
    local check = link_check(KEYS[first_key + i], KEYS[first_key + links + i], now, lease, not usable_found)
    if check == 'skip' or check == 'due' then
      skip[#skip + 1] = deployment
    else
      if check == 'probe' then
        probes[#probes + 1] = deployment
      end
      usable_found = true
    end
  end
  return skip, probes
end
