-- KEYS[1] deadline index
-- ARGV[1] key prefix, ARGV[2] now, ARGV[3] batch size
-- Returns the number of due entries looked at, then the ids released. Each batch is one
-- atomic step, so two reapers never release the same reservation.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local reply = {#due}
for _, id in ipairs(due) do
  local record_key = ARGV[1] .. 'res:' .. id
  local record = redis.call('GET', record_key)
  if record then
    release(ARGV[1], id, record, '0', nil, '')
    redis.call('DEL', record_key)
    table.insert(reply, id)
  end
  redis.call('ZREM', KEYS[1], id)
end
return reply
