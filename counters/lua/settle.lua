-- Settle calls, each in the same way (settle_one, release.lua).
-- KEYS[1] deadline index
-- ARGV[1] key prefix, ARGV[2] the position of the commit that wrote the calls' log rows ('' if
-- none did), ARGV[3] '1' to charge the cost of a call whose reservation is gone, then for each
-- call: its reservation id, real cost, real tokens, its number of buckets, their names.
-- Reply: for each call, 1 if it was settled, 2 if the reaper settled it already from its log
-- row (reap_settled.lua), 3 if its reservation was gone (lost with Redis) and its cost was
-- charged to its buckets in the same step, 0 if it was gone and nothing was charged.
local prefix = ARGV[1]
local position = ARGV[2]
local charge_missing = ARGV[3] == '1'
local settled = {}
local n = 0
local i = 4
while i <= #ARGV do
  local id, cost, tokens, count = ARGV[i], ARGV[i + 1], number(ARGV[i + 2]), number(ARGV[i + 3])
  local outcome = 0
  if settle_one(prefix, KEYS[1], id, cost, tokens, position) then
    outcome = 1
  elseif redis.call('EXISTS', prefix .. 'reaped:' .. id) == 1 then
    outcome = 2
  elseif charge_missing and count > 0 then
    for j = 1, count do
      add_settled(prefix, ARGV[i + 3 + j], cost, position)
    end
    outcome = 3
  end
  n = n + 1
  settled[n] = outcome
  i = i + 4 + count
end
return settled
