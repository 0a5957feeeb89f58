-- Count the tool calls an answer of a run asked for, for the run's loop guard (admit.lua).
-- KEYS[1] the run's state hash. ARGV[1] its time to live (ms), then each tool call's signature.
-- The hash keeps each signature's count (tc:<signature>) and the largest of them (loop).
local most = tonumber(redis.call('HGET', KEYS[1], 'loop') or '0')
for i = 2, #ARGV do
  local count = redis.call('HINCRBY', KEYS[1], 'tc:' .. ARGV[i], 1)
  if count > most then
    most = count
  end
end
redis.call('HSET', KEYS[1], 'loop', most)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
