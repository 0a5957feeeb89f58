-- Settle calls, each in the same way (settle_one, release.lua).
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
  if settle_one(prefix, KEYS[1], id, ARGV[i + 1], tonumber(ARGV[i + 2]), position) then
    table.insert(settled, 1)
  elseif redis.call('EXISTS', prefix .. 'reaped:' .. id) == 1 then
    table.insert(settled, 2)
  else
    table.insert(settled, 0)
  end
end
return settled
