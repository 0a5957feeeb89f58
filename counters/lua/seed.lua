-- Set a missing settled counter from the ledger, with the snapshot the ledger was read at, and
-- add the costs settled meanwhile that the read did not see (ledger.lua's add_settled).
-- KEYS[1] the settled counter, KEYS[2] its snapshot, KEYS[3] the costs waiting for it
-- ARGV[1] the value, ARGV[2] its time to live in ms ('' for none), ARGV[3] the snapshot ('' if
-- unknown). Reply: 1 if set, 0 if someone else set it first (theirs is kept).
local set
if ARGV[2] == '' then
  set = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else
  set = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
end
if not set then
  return 0
end
local snapshot = nil
if ARGV[3] == '' then
  redis.call('DEL', KEYS[2])
else
  snapshot = ARGV[3]
  if ARGV[2] == '' then
    redis.call('SET', KEYS[2], ARGV[3])
  else
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
  end
end
for _, entry in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  local position, cost = string.match(entry, '^(%d+):(%d+)$')
  if not seen(snapshot, tonumber(position)) then
    redis.call('INCRBY', KEYS[1], cost)
  end
end
redis.call('DEL', KEYS[3])
return 1
