-- After the store lost its state (epoch.lua): a worker puts back its own calls in flight, so
-- that admissions count them again. A reservation still there, or settled by the reaper
-- already, is left as it is; a bucket that still holds the reservation's entry is not counted
-- twice.
--
-- KEYS[1] deadline index
-- ARGV[1] key prefix, then for each reservation: its id, deadline, record (JSON), the key of
-- its key's set of calls in flight ('' if none), its number of buckets, then for each bucket
-- its name and the amount reserved.
-- Reply: how many were restored.
local prefix = ARGV[1]
local restored = 0
local i = 2
while i <= #ARGV do
  local id, deadline, record, parallel = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local count = tonumber(ARGV[i + 4])
  local record_key = prefix .. 'res:' .. id
  if redis.call('EXISTS', record_key) == 0 and redis.call('EXISTS', prefix .. 'reaped:' .. id) == 0 then
    redis.call('SET', record_key, record)
    redis.call('ZADD', KEYS[1], deadline, id)
    for j = 0, count - 1 do
      local reserved_key = prefix .. 'r:' .. ARGV[i + 5 + 2 * j]
      local amount = ARGV[i + 6 + 2 * j]
      if redis.call('HSETNX', reserved_key, 'res:' .. id, amount) == 1 then
        redis.call('HINCRBY', reserved_key, 'total', amount)
      end
    end
    if parallel ~= '' then
      redis.call('SADD', parallel, id)
    end
    restored = restored + 1
  end
  i = i + 5 + 2 * count
end
return restored
