-- Shared by admit.lua and keepalive.lua (prepended to each): has the store lost what it held?
--
-- Reservations in flight exist only in Redis, and a flush or a restart without persistence
-- loses them: admitting on top of counters rebuilt from the ledger could then spend past a
-- budget. So the store keeps an epoch, a key with no TTL that every worker reads with each
-- admission and heartbeat. A worker that saw one epoch and now finds none, or another, knows the
-- store lost its state: it starts a hold (no admission until it ends) and restores its own calls
-- in flight (restore.lua) before anything else; every other live worker notices within one
-- heartbeat and restores its own during the hold. A worker that has seen no epoch yet (it just
-- started) has nothing to restore: it takes the epoch as it finds it, or starts the first one.
--
-- Returns the epoch now, and whether the caller must restore its reservations.
local function epoch_check(epoch_key, hold_key, seen, fresh, hold_ms)
  local epoch = redis.call('GET', epoch_key)
  if not epoch then
    redis.call('SET', epoch_key, fresh)
    if seen == '' then
      return fresh, false
    end
    redis.call('SET', hold_key, '1', 'PX', hold_ms)
    return fresh, true
  end
  if seen ~= '' and epoch ~= seen then
    -- Another worker noticed first (its hold stands), or a new worker started a new epoch
    -- unaware of the loss (a hold starts now).
    redis.call('SET', hold_key, '1', 'PX', hold_ms, 'NX')
    return epoch, true
  end
  return epoch, false
end
