-- KEYS[1] latency average of one deployment; ARGV[1] this call's latency (ms), ARGV[2] weight
-- of the new sample. Read and write in one step so concurrent samples are all counted.
local sample = tonumber(ARGV[1])
local average = tonumber(redis.call('GET', KEYS[1]))
if average then
  average = average + tonumber(ARGV[2]) * (sample - average)
else
  average = sample
end
redis.call('SET', KEYS[1], string.format('%.17g', average))
