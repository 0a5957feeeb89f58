-- One hot-path step: check the key's rate limits and reserve at every budget level, or change
-- nothing at all; once reserved, check the chain the call may be served by (chain.lua), so a
-- refused call never takes a circuit's probe.
--
-- KEYS[1] reservation record, KEYS[2] deadline index, KEYS[3] the store's epoch, KEYS[4] the
-- recovery hold, KEYS[5] request window, KEYS[6] token window, KEYS[7] set of the key's calls in
-- flight, KEYS[8] the run's state (see below), then for each bucket: its settled counter, its
-- reserved hash;
-- then, with a chain: each deployment's cooldown, then each deployment's circuit breaker.
-- ARGV[1] reservation id, ARGV[2] now, ARGV[3] deadline, ARGV[4] reservation record (JSON),
-- ARGV[5] rpm, ARGV[6] tpm, ARGV[7] max parallel ('' = no such limit), ARGV[8] tokens,
-- ARGV[9] number of buckets, ARGV[10] the epoch this worker last saw ('' if none yet),
-- ARGV[11] a new epoch, should the store have lost its own, ARGV[12] the hold after a loss (ms),
-- ARGV[13..16] the output fit ('' = none): the prompt's worst case (micro-dollars), the output's
-- price per token (pico-dollars), the fewest and the most output tokens; ARGV[17..19] the run
-- (ARGV[19] '' = none): the envelope proposed ('' = none), its most steps ('' = no limit), its
-- loop limit ('0' = off); then for each bucket: its limit, the amount to reserve (with a fit: unused);
-- then, with a chain: the probe lease (s), then each deployment.
--
-- Reply: status, then requests limit/remaining/reset and tokens limit/remaining/reset ('' when
-- not limited), then: ok -> the epoch, the amount reserved, the output tokens fitted ('' without a
-- fit), then with a chain its skip and probes lists;
-- rate_limited -> which, retry after; budget -> bucket index, settled, reserved, the limit it
-- held; steps -> the run's most steps; loop -> the repeats of its most asked-for tool call; missing -> the
-- indexes of the missing buckets; lost -> the store's epoch now; hold -> its milliseconds left.
--
-- This runs once per gateway call, so it is written to cost Redis little: no table per window
-- or per bucket (locals and multiple return values instead), each argument parsed once
-- (number.lua), and replies built in one table constructor. A Lua table, a tonumber of a string
-- or a string.format each cost Redis about as much as a small redis.call, 1.5 to 6 k
-- instructions (bench/RESULTS.md, session 14).
local WINDOW = 60
-- Slack (s) for float rounding: times near 2e9 s carry about 2.4e-7 s of it.
local EPS = 1e-6
local now = number(ARGV[2])
local buckets = number(ARGV[9])
local FIRST_BUCKET_KEY = 8
local FIRST_BUCKET_ARG = 19
-- counters.store.RUN_STATE_TTL_S: a run's state outlives its last call by this much.
local RUN_STATE_TTL_MS = 7 * 24 * 3600 * 1000

-- GCRA over a 60 s window: `tat` is the time at which the window would be full again. A call
-- of weight `cost` fits if it pushes tat no further than one window ahead of now. This is a
-- sliding window with no boundary burst, and one number per limit.
-- Returns the seconds one unit of the limit takes, tat now and tat with the call in; nothing
-- without a limit.
local function window(key, limit_arg, cost)
  if limit_arg == '' then
    return nil
  end
  local interval = WINDOW / number(limit_arg)
  local tat = redis.call('GET', key)
  local current = tat and math.max(number(tat), now) or now
  return interval, current, current + cost * interval
end

-- The reservations in flight live only here: once they are lost (a flush, a restart without
-- persistence), admitting on top of a rebuilt counter could spend past a budget. The loss shows
-- as a missing or changed epoch (epoch.lua); the worker that sees it restores its own calls in
-- flight, and every admission waits out the hold meanwhile, so the others can restore theirs.
local epoch, lost = epoch_check(KEYS[3], KEYS[4], ARGV[10], ARGV[11], ARGV[12])
if lost then
  return {'lost', '', '', '', '', '', '', epoch}
end
local hold = redis.call('PTTL', KEYS[4])
if hold > 0 then
  return {'hold', '', '', '', '', '', '', tostring(hold)}
end

local tokens_cost = number(ARGV[8])
local requests_interval, requests_now, requests_after = window(KEYS[5], ARGV[5], 1)
local tokens_interval, tokens_now, tokens_after = window(KEYS[6], ARGV[6], tokens_cost)

-- One window's headers as it stands at `tat`: limit, remaining, reset ('' each without a limit).
local function shown(limit_arg, interval, tat)
  if not interval then
    return '', '', ''
  end
  return limit_arg, string.format('%d', math.max(0, math.floor((now + WINDOW - tat + EPS) / interval))),
    string.format('%.17g', tat - now)
end

-- The reply: the status, both windows' headers, then up to five more values. The headers show
-- each window as it stands after this step: moved only if the call is in.
local function reply(status, a, b, c, d, e)
  local moved = status == 'ok'
  local r1, r2, r3 = shown(ARGV[5], requests_interval, moved and requests_after or requests_now)
  local t1, t2, t3 = shown(ARGV[6], tokens_interval, moved and tokens_after or tokens_now)
  return {status, r1, r2, r3, t1, t2, t3, a, b, c, d, e}
end

-- The reply to an admitted call: with a chain, the chain's check (chain.lua) follows.
local function admitted(amount, tokens_fitted)
  local chain_keys = FIRST_BUCKET_KEY + 1 + 2 * buckets
  if #KEYS < chain_keys then
    return reply('ok', epoch, amount, tokens_fitted)
  end
  local chain_arg = FIRST_BUCKET_ARG + 1 + 2 * buckets
  local skip, probes = chain_check(chain_keys, (#KEYS - chain_keys + 1) / 2, chain_arg + 1, now,
    number(ARGV[chain_arg]))
  return reply('ok', epoch, amount, tokens_fitted, skip, probes)
end

-- With a fit, what the call reserves is the prompt's worst case plus as many output tokens as
-- the tightest bucket can still pay for, up to the most asked for; nothing if not even the
-- fewest fit. Pico-dollars keep an output token's price whole: tokens * price stays below 2^53.
local fit = ARGV[13] ~= ''
local base, price, fewest, most
if fit then
  base, price, fewest, most = number(ARGV[13]), number(ARGV[14]), number(ARGV[15]), number(ARGV[16])
end

if redis.call('EXISTS', KEYS[1]) == 1 then
  -- This very admission, tried again after its reply was lost: it is in already.
  local amount = '0'
  if buckets > 0 then
    amount = redis.call('HGET', KEYS[FIRST_BUCKET_KEY + 2], 'res:' .. ARGV[1]) or ARGV[FIRST_BUCKET_ARG + 2]
  end
  local tokens_fitted = ''
  if fit then
    tokens_fitted = tostring(most)
    if price ~= 0 then
      tokens_fitted = string.format('%d', math.min(most, math.floor((number(amount) - base) * 1000000 / price)))
    end
  end
  return admitted(amount, tokens_fitted)
end
-- Written as "not within a window" so that a zero limit's NaN (no tokens at no interval) is refused.
if requests_interval and not (requests_after - now <= WINDOW + EPS) then
  return reply('rate_limited', 'requests', string.format('%.17g', requests_after - WINDOW - now))
end
if tokens_interval and not (tokens_after - now <= WINDOW + EPS) then
  return reply('rate_limited', 'tokens', string.format('%.17g', tokens_after - WINDOW - now))
end
if ARGV[7] ~= '' and redis.call('SCARD', KEYS[7]) >= number(ARGV[7]) then
  -- Nothing times a slot's release; the client is told to try again shortly.
  return reply('rate_limited', 'parallel', '1')
end

local settled = {}
local missing = false
for i = 1, buckets do
  settled[i] = redis.call('GET', KEYS[FIRST_BUCKET_KEY - 1 + 2 * i])
  missing = missing or not settled[i]
end
if missing then
  local out, n = reply('missing'), 7
  for i = 1, buckets do
    if not settled[i] then
      n = n + 1
      out[n] = tostring(i)
    end
  end
  return out
end
-- A run with an envelope or a loop guard: its bucket is the last, its state a hash (KEYS[8]):
-- the envelope its first admission set (a later one cannot raise it), its steps so far, and the
-- repeats of the tool call its answers asked for most (run_tools.lua).
local run = ARGV[19] ~= ''
local run_limit
if run then
  local state = redis.call('HMGET', KEYS[8], 'limit', 'steps', 'loop')
  local loop_limit = number(ARGV[19])
  if loop_limit > 0 and number(state[3] or '0') >= loop_limit then
    return reply('loop', state[3])
  end
  if ARGV[18] ~= '' and number(state[2] or '0') >= number(ARGV[18]) then
    return reply('steps', ARGV[18])
  end
  run_limit = state[1]
end
-- Money stays in strings on its way through Redis; the comparison runs on Lua doubles, exact
-- for integers up to 2^53 micro-dollars (about 9 billion dollars). With a fit, the tightest
-- bucket (the first with the least room) decides, and its figures are kept for a refusal.
local room, tightest, tightest_reserved, tightest_limit
for i = 1, buckets do
  local reserved = redis.call('HGET', KEYS[FIRST_BUCKET_KEY + 2 * i], 'total') or '0'
  local limit = ARGV[FIRST_BUCKET_ARG - 1 + 2 * i]
  if run and i == buckets and run_limit then
    limit = run_limit
  end
  local left = number(limit) - number(settled[i]) - number(reserved)
  if fit then
    if not room or left < room then
      room, tightest, tightest_reserved, tightest_limit = left, i, reserved, limit
    end
  elseif number(ARGV[FIRST_BUCKET_ARG + 2 * i]) > left then
    return reply('budget', tostring(i), settled[i], reserved, limit)
  end
end
-- With a fit every bucket reserves the same amount; without, each its own (its ARGV).
local fitted_amount
local tokens_fitted = ''
if fit and buckets > 0 then
  local tokens = most
  if price > 0 then
    tokens = math.min(most, math.floor((room - base) * 1000000 / price))
  end
  if room < base or tokens < fewest then
    return reply('budget', tostring(tightest), settled[tightest], tightest_reserved, tightest_limit)
  end
  fitted_amount = string.format('%d', base + math.ceil(tokens * price / 1000000))
  tokens_fitted = string.format('%d', tokens)
end

local id = ARGV[1]
local entry = 'res:' .. id
for i = 1, buckets do
  local amount = fitted_amount or ARGV[FIRST_BUCKET_ARG + 2 * i]
  redis.call('HSET', KEYS[FIRST_BUCKET_KEY + 2 * i], entry, amount)
  redis.call('HINCRBY', KEYS[FIRST_BUCKET_KEY + 2 * i], 'total', amount)
end
if run then
  if ARGV[17] ~= '' then
    redis.call('HSETNX', KEYS[8], 'limit', ARGV[17])
  end
  redis.call('HINCRBY', KEYS[8], 'steps', 1)
  redis.call('PEXPIRE', KEYS[8], RUN_STATE_TTL_MS)
end
-- A window key lives until it is full again; the token window at least until the deadline, so
-- settle can still correct it.
if requests_interval then
  redis.call('SET', KEYS[5], string.format('%.17g', requests_after),
    'PX', math.ceil((requests_after - now + 1) * 1000))
end
if tokens_interval and tokens_cost > 0 then
  local ttl = math.ceil((math.max(tokens_after, number(ARGV[3])) - now + 1) * 1000)
  redis.call('SET', KEYS[6], string.format('%.17g', tokens_after),
    'PX', math.max(ttl, redis.call('PTTL', KEYS[6])))
end
if ARGV[7] ~= '' then
  redis.call('SADD', KEYS[7], id)
end
-- The record says what a fitted call reserved (``a``): the reaper charges it should the worker die.
local record = ARGV[4]
if fitted_amount then
  record = string.sub(record, 1, -2) .. ',"a":' .. fitted_amount .. '}'
end
redis.call('SET', KEYS[1], record)
redis.call('ZADD', KEYS[2], ARGV[3], id)
return admitted(fitted_amount or (buckets > 0 and ARGV[FIRST_BUCKET_ARG + 2]) or '0', tokens_fitted)
