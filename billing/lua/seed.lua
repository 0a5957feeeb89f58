-- Set a missing settled counter from the ledger, with the snapshot the ledger was read at.
-- KEYS[1] the settled counter, KEYS[2] its snapshot
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
if ARGV[3] == '' then
  redis.call('DEL', KEYS[2])
elseif ARGV[2] == '' then
  redis.call('SET', KEYS[2], ARGV[3])
else
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
end
return 1
