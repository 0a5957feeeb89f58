-- KEYS[1] circuit breaker of one deployment (see chain.lua; a closed circuit has no
-- `state`, only the recent `failures`)
-- ARGV[1] '1' if the call succeeded, ARGV[2] now, ARGV[3] failure threshold, ARGV[4] window (s),
-- ARGV[5] open period (s)
local ok = ARGV[1] == '1'
local now = tonumber(ARGV[2])
local state = redis.call('HGET', KEYS[1], 'state')
local function open()
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', string.format('%.17g', now + tonumber(ARGV[5])),
    'failures', '')
end
if state == 'half_open' then
  -- The probe's answer decides: success closes the circuit, failure opens it again.
  if ok then
    redis.call('DEL', KEYS[1])
  else
    open()
  end
  return
end
-- Calls that started before the circuit opened say nothing new about it.
if ok or state == 'open' then
  return
end
-- Closed: keep the failure times still inside the window (at most threshold of them).
local threshold = tonumber(ARGV[3])
local since = now - tonumber(ARGV[4])
local recent = {}
for t in string.gmatch(redis.call('HGET', KEYS[1], 'failures') or '', '%S+') do
  if tonumber(t) > since then
    table.insert(recent, t)
  end
end
table.insert(recent, string.format('%.17g', now))
if #recent >= threshold then
  open()
else
  redis.call('HSET', KEYS[1], 'failures', table.concat(recent, ' '))
end
