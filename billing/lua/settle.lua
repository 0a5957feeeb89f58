-- Settle calls, each in the same way (release.lua): the record is deleted in the same step, so
-- a second settle (or a reaper) finds nothing.
-- KEYS[1] deadline index
-- ARGV[1] key prefix, ARGV[2] the position of the commit that wrote the calls' log rows ('' if
-- none did), then for each call: its reservation id, real cost, real tokens
-- Reply: for each call, 1 if it was settled, 2 if the reaper settled it already from its log
-- row (reap_settled.lua), 0 if its reservation was not found.
local prefix = ARGV[1]
local position = tonumber(ARGV[2])
local settled = {}
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  local record_key = prefix .. 'res:' .. id
  local record = redis.call('GET', record_key)
  if record then
    release(prefix, id, record, ARGV[i + 1], tonumber(ARGV[i + 2]), position)
    redis.call('DEL', record_key)
    redis.call('ZREM', KEYS[1], id)
    table.insert(settled, 1)
  elseif redis.call('EXISTS', prefix .. 'reaped:' .. id) == 1 then
    table.insert(settled, 2)
  else
    table.insert(settled, 0)
  end
end
return settled
