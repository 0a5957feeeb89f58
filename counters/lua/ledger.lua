-- Prepended to the scripts that add a settled cost (see analytics/ledger.py): whether the
-- rebuild that set a counter, reading the ledger at `snapshot` ('xmin:xmax:running,...'),
-- already counted the call committed at `position`. No snapshot or no position: not seen.
local function seen(snapshot, position)
  if not snapshot or not position then
    return false
  end
  local xmin, xmax, running = string.match(snapshot, '^(%d+):(%d+):(.*)$')
  if position < number(xmin) then
    return true
  end
  if position >= number(xmax) then
    return false
  end
  for xid in string.gmatch(running, '%d+') do
    if number(xid) == position then
      return false
    end
  end
  return true
end

-- How long a cost waits for the rebuild of its missing counter (seed.lua): far longer than a
-- rebuild's read of the ledger takes.
local PENDING_S = 600

-- Adds a settled cost (committed at `position_arg`, '' if unknown) to a bucket's counter, if
-- the counter exists and its rebuild did not count the cost already. A missing counter is
-- rebuilt from the ledger (SET NX), never created here: a counter holding just this call could
-- no longer be replaced by the rebuild. But a rebuild may be under way, its read of the ledger
-- taken before this cost's commit: the cost waits beside the counter (pc:) for that rebuild,
-- which adds it unless its read saw the commit (seed.lua).
local function add_settled(prefix, name, cost, position_arg)
  if cost == '0' then
    return
  end
  local settled_key = prefix .. 's:' .. name
  local position = tonumber(position_arg)
  if redis.call('EXISTS', settled_key) == 1 then
    if not seen(redis.call('GET', prefix .. 'sx:' .. name), position) then
      redis.call('INCRBY', settled_key, cost)
    end
  elseif position then
    local pending_key = prefix .. 'pc:' .. name
    redis.call('RPUSH', pending_key, position_arg .. ':' .. cost)
    redis.call('EXPIRE', pending_key, PENDING_S)
  end
end
