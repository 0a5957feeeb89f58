-- KEYS: settled counters; ARGV[1] the cost to add to those that exist (see release.lua for why
-- a missing counter is left for the rebuild).
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCRBY', key, ARGV[1])
  end
end
