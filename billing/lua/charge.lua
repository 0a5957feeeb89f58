-- Add the cost of a call whose reservation is gone (reaped, or lost with Redis) to its counters.
-- KEYS: the settled counters, then their rebuilds' snapshots in the same order
-- ARGV[1] the cost, ARGV[2] the position of the commit that wrote the call's log row ('' if none)
-- A missing counter is left to its rebuild (release.lua), a counter rebuilt from a ledger that
-- already held the row keeps what it has (ledger.lua).
local count = #KEYS / 2
for i = 1, count do
  add_settled(KEYS[i], KEYS[count + i], ARGV[1], tonumber(ARGV[2]))
end
