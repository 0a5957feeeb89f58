-- A worker's heartbeat: notice a lost store (epoch.lua), and push back the deadlines of this
-- worker's calls in flight, so that only the calls of a worker that died reach their deadline.
--
-- KEYS[1] the store's epoch, KEYS[2] the recovery hold, KEYS[3] deadline index
-- ARGV[1] the epoch this worker last saw, ARGV[2] a new epoch should the store have none,
-- ARGV[3] the hold after a loss (ms), then pairs: a new deadline, a reservation id
-- Reply: {'ok' or 'lost', the epoch}
local epoch, lost = epoch_check(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if lost then
  return {'lost', epoch}
end
for i = 4, #ARGV, 2 do
  -- XX: a reservation settled or reaped meanwhile stays gone.
  redis.call('ZADD', KEYS[3], 'XX', ARGV[i], ARGV[i + 1])
end
return {'ok', epoch}
