-- KEYS[1] reservation record, KEYS[2] deadline index
-- ARGV[1] key prefix, ARGV[2] reservation id, ARGV[3] real cost, ARGV[4] real tokens
-- The record is deleted in the same step, so a second settle (or a reaper) finds nothing.
local record = redis.call('GET', KEYS[1])
if not record then
  return 0
end
release(ARGV[1], ARGV[2], record, ARGV[3], tonumber(ARGV[4]))
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
