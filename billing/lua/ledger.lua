-- Prepended to the scripts that add a settled cost (see analytics/ledger.py): whether the
-- rebuild that set a counter, reading the ledger at `snapshot` ('xmin:xmax:running,...'),
-- already counted the call committed at `position`. No snapshot or no position: not seen.
local function seen(snapshot, position)
  if not snapshot or not position then
    return false
  end
  local xmin, xmax, running = string.match(snapshot, '^(%d+):(%d+):(.*)$')
  if position < tonumber(xmin) then
    return true
  end
  if position >= tonumber(xmax) then
    return false
  end
  for xid in string.gmatch(running, '%d+') do
    if tonumber(xid) == position then
      return false
    end
  end
  return true
end

-- Adds a settled cost to a counter that exists and whose rebuild did not count it already.
local function add_settled(settled_key, snapshot_key, cost, position)
  if cost ~= '0' and redis.call('EXISTS', settled_key) == 1
      and not seen(redis.call('GET', snapshot_key), position) then
    redis.call('INCRBY', settled_key, cost)
  end
end
