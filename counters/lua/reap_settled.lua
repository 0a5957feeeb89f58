-- The reaper's settle of calls whose log rows are in the ledger although their reservations are
-- past their deadline (the worker died between its commit and its settle, or a failover lost
-- the settle): as settle.lua (settle_one), with the rows' costs, and each settled reservation is marked
-- (reaped:<id>) for ARGV[3] seconds, so that the call's own settle, should it still come, is told
-- it was settled (settle.lua replies 2) and does not charge the cost again.
-- KEYS[1] deadline index
-- ARGV[1] key prefix, ARGV[2] the position of the commit that wrote the rows, ARGV[3] how long
-- the marks live (s), then for each call: its reservation id, real cost, real tokens
-- Reply: for each call, 1 if it was settled, 0 if its reservation was gone.
local prefix = ARGV[1]
local position = ARGV[2]
local settled = {}
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  if settle_one(prefix, KEYS[1], id, ARGV[i + 1], number(ARGV[i + 2]), position) then
    redis.call('SET', prefix .. 'reaped:' .. id, '1', 'EX', ARGV[3])
    table.insert(settled, 1)
  else
    table.insert(settled, 0)
  end
end
return settled
