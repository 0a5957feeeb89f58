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
local WINDOW = 60
-- Slack (s) for float rounding: times near 2e9 s carry about 2.4e-7 s of it.
local EPS = 1e-6
local now = tonumber(ARGV[2])
local deadline = tonumber(ARGV[3])
local buckets = tonumber(ARGV[9])
local FIRST_BUCKET_KEY = 8
local FIRST_BUCKET_ARG = 19
-- counters.store.RUN_STATE_TTL_S: a run's state outlives its last call by this much.
local RUN_STATE_TTL_MS = 7 * 24 * 3600 * 1000

-- GCRA over a 60 s window: `tat` is the time at which the window would be full again. A call
-- of weight `cost` fits if it pushes tat no further than one window ahead of now. This is a
-- sliding window with no boundary burst, and one number per limit.
local function check(key, limit_arg, cost)
  if limit_arg == '' then
    return nil
  end
  local limit = tonumber(limit_arg)
  local w = {limit = limit_arg, interval = WINDOW / limit, cost = cost}
  w.current = math.max(tonumber(redis.call('GET', key)) or now, now)
  w.after = w.current + cost * w.interval
  w.ok = w.after - now <= WINDOW + EPS
  w.retry = w.after - WINDOW - now
  return w
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

local requests = check(KEYS[5], ARGV[5], 1)
local tokens = check(KEYS[6], ARGV[6], tonumber(ARGV[8]))

-- The headers show each window as it stands after this step: moved only if the call is in.
local function reply(status, ...)
  local out = {status}
  for _, w in ipairs({requests or false, tokens or false}) do
    if w then
      local tat = status == 'ok' and w.after or w.current
      table.insert(out, w.limit)
      table.insert(out, string.format('%d', math.max(0, math.floor((now + WINDOW - tat + EPS) / w.interval))))
      table.insert(out, string.format('%.17g', tat - now))
    else
      table.insert(out, '')
      table.insert(out, '')
      table.insert(out, '')
    end
  end
  for _, v in ipairs({...}) do
    table.insert(out, v)
  end
  return out
end

local function with_chain(out)
  local chain_keys = FIRST_BUCKET_KEY + 1 + 2 * buckets
  if #KEYS >= chain_keys then
    local links = (#KEYS - chain_keys + 1) / 2
    local check = chain_check({unpack(KEYS, chain_keys, chain_keys + links - 1)}, {unpack(KEYS, chain_keys + links)},
      {unpack(ARGV, FIRST_BUCKET_ARG + 2 + 2 * buckets)}, now, tonumber(ARGV[FIRST_BUCKET_ARG + 1 + 2 * buckets]))
    table.insert(out, check[1])
    table.insert(out, check[2])
  end
  return out
end

-- With a fit, what the call reserves is the prompt's worst case plus as many output tokens as
-- the tightest bucket can still pay for, up to the most asked for; nothing if not even the
-- fewest fit. Pico-dollars keep an output token's price whole: tokens * price stays below 2^53.
local fit = ARGV[13] ~= ''
local base, price, fewest, most
if fit then
  base, price, fewest, most = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
end
local function fitted_tokens(amount)
  if not fit then
    return ''
  end
  if price == 0 then
    return tostring(most)
  end
  return string.format('%d', math.min(most, math.floor((amount - base) * 1000000 / price)))
end

if redis.call('EXISTS', KEYS[1]) == 1 then
  -- This very admission, tried again after its reply was lost: it is in already.
  local amount = '0'
  if buckets > 0 then
    amount = redis.call('HGET', KEYS[FIRST_BUCKET_KEY + 2], 'res:' .. ARGV[1]) or ARGV[FIRST_BUCKET_ARG + 2]
  end
  return with_chain(reply('ok', epoch, amount, fitted_tokens(tonumber(amount))))
end
if requests and not requests.ok then
  return reply('rate_limited', 'requests', string.format('%.17g', requests.retry))
end
if tokens and not tokens.ok then
  return reply('rate_limited', 'tokens', string.format('%.17g', tokens.retry))
end
if ARGV[7] ~= '' and redis.call('SCARD', KEYS[7]) >= tonumber(ARGV[7]) then
  -- Nothing times a slot's release; the client is told to try again shortly.
  return reply('rate_limited', 'parallel', '1')
end

local settled = {}
local missing = {}
for i = 1, buckets do
  settled[i] = redis.call('GET', KEYS[FIRST_BUCKET_KEY - 1 + 2 * i])
  if not settled[i] then
    table.insert(missing, tostring(i))
  end
end
if #missing > 0 then
  return reply('missing', unpack(missing))
end
-- A run with an envelope or a loop guard: its bucket is the last, its state a hash (KEYS[8]):
-- the envelope its first admission set (a later one cannot raise it), its steps so far, and the
-- repeats of the tool call its answers asked for most (run_tools.lua).
local run = ARGV[19] ~= ''
local run_limit
if run then
  local state = redis.call('HMGET', KEYS[8], 'limit', 'steps', 'loop')
  local loop_limit = tonumber(ARGV[19])
  if loop_limit > 0 and tonumber(state[3] or '0') >= loop_limit then
    return reply('loop', state[3])
  end
  if ARGV[18] ~= '' and tonumber(state[2] or '0') >= tonumber(ARGV[18]) then
    return reply('steps', ARGV[18])
  end
  run_limit = state[1]
end
-- Money stays in strings on its way through Redis; the comparison runs on Lua doubles, exact
-- for integers up to 2^53 micro-dollars (about 9 billion dollars).
local reserved = {}
local amounts = {}
local limits = {}
local room, tightest
for i = 1, buckets do
  reserved[i] = redis.call('HGET', KEYS[FIRST_BUCKET_KEY + 2 * i], 'total') or '0'
  limits[i] = ARGV[FIRST_BUCKET_ARG - 1 + 2 * i]
  if run and i == buckets and run_limit then
    limits[i] = run_limit
  end
  local left = tonumber(limits[i]) - tonumber(settled[i]) - tonumber(reserved[i])
  if fit then
    if not room or left < room then
      room, tightest = left, i
    end
  elseif tonumber(ARGV[FIRST_BUCKET_ARG + 2 * i]) > left then
    return reply('budget', tostring(i), settled[i], reserved[i], limits[i])
  end
  amounts[i] = ARGV[FIRST_BUCKET_ARG + 2 * i]
end
local tokens_fitted = ''
if fit and buckets > 0 then
  local tokens = most
  if price > 0 then
    tokens = math.min(most, math.floor((room - base) * 1000000 / price))
  end
  if room < base or tokens < fewest then
    return reply('budget', tostring(tightest), settled[tightest], reserved[tightest], limits[tightest])
  end
  local amount = string.format('%d', base + math.ceil(tokens * price / 1000000))
  for i = 1, buckets do
    amounts[i] = amount
  end
  tokens_fitted = string.format('%d', tokens)
end

local id = ARGV[1]
for i = 1, buckets do
  redis.call('HSET', KEYS[FIRST_BUCKET_KEY + 2 * i], 'res:' .. id, amounts[i])
  redis.call('HINCRBY', KEYS[FIRST_BUCKET_KEY + 2 * i], 'total', amounts[i])
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
if requests then
  redis.call('SET', KEYS[5], string.format('%.17g', requests.after),
    'PX', math.ceil((requests.after - now + 1) * 1000))
end
if tokens and tokens.cost > 0 then
  local ttl = math.ceil((math.max(tokens.after, deadline) - now + 1) * 1000)
  redis.call('SET', KEYS[6], string.format('%.17g', tokens.after),
    'PX', math.max(ttl, redis.call('PTTL', KEYS[6])))
end
if ARGV[7] ~= '' then
  redis.call('SADD', KEYS[7], id)
end
-- The record says what a fitted call reserved (``a``): the reaper charges it should the worker die.
local record = ARGV[4]
if fit and buckets > 0 then
  record = string.sub(record, 1, -2) .. ',"a":' .. amounts[1] .. '}'
end
redis.call('SET', KEYS[1], record)
redis.call('ZADD', KEYS[2], ARGV[3], id)
return with_chain(reply('ok', epoch, amounts[1] or '0', tokens_fitted))
