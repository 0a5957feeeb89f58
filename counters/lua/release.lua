-- Shared by settle.lua, reap_settled.lua and reap.lua (prepended to each): undo one reservation.
--
-- Each bucket forgets the reservation's own entry, so a reserved total is only ever lowered
-- by an amount it really holds: if the reserved hash was lost and rebuilt meanwhile, the entry
-- is not there and nothing is subtracted (the total can never go negative).
-- The real cost goes to the settled counter as ledger.lua's add_settled says (`position_arg`:
-- the commit that wrote the call's log row, '' if none did).
-- `tokens` is nil when the real count is unknown (a reaped call): the estimate then stands.

-- What a release reads of a reservation's record: its buckets (b), rate key (rk), tokens (tk)
-- and token interval (ti). The trail (c, for the reaper's log row) comes after them and is most
-- of the record, so only the part before it is decoded: `,"c":` cannot occur inside a string of
-- the JSON (a quote is escaped there), so its first occurrence is the trail's key.
local function record_head(record)
  local trail = string.find(record, ',"c":', 1, true)
  if not trail then
    return cjson.decode(record)
  end
  return cjson.decode(string.sub(record, 1, trail - 1) .. '}')
end

local function release(prefix, id, record, cost, tokens, position_arg)
  local rec = record_head(record)
  local entry = 'res:' .. id
  for _, name in ipairs(rec.b) do
    local reserved_key = prefix .. 'r:' .. name
    local amount = redis.call('HGET', reserved_key, entry)
    if amount then
      redis.call('HDEL', reserved_key, entry)
      -- The total is the sum of the entries (every script changes both at once), so while it is
      -- above zero other entries remain; only at zero may the hash hold the total alone.
      -- Redis does not parse "-0" as an integer.
      local total = 0
      if amount ~= '0' then
        total = redis.call('HINCRBY', reserved_key, 'total', '-' .. amount)
      end
      if total == 0 and redis.call('HLEN', reserved_key) == 1 then
        redis.call('DEL', reserved_key)
      end
    end
    add_settled(prefix, name, cost, position_arg)
  end
  if rec.rk then
    local window = prefix .. 'rl:' .. rec.rk
    redis.call('SREM', window .. ':par', id)
    if rec.ti and tokens then
      local token_key = window .. ':tok'
      local tat = redis.call('GET', token_key)
      local shift = (tokens - rec.tk) * rec.ti
      -- Move the window as if the real count had been known at admission. A window that has
      -- expired was full again by then, so there is nothing left to correct.
      if tat and shift ~= 0 then
        redis.call('SET', token_key, string.format('%.17g', number(tat) + shift), 'KEEPTTL')
        local ttl = redis.call('PTTL', token_key)
        if shift > 0 and ttl > 0 then
          redis.call('PEXPIRE', token_key, ttl + math.ceil(shift * 1000))
        end
      end
    end
  end
end

-- Settles one call (settle.lua, reap_settled.lua) if its reservation is still there: the
-- reservation released with the real cost, its record and deadline deleted in the same step, so
-- a second settle (or a reaper) finds nothing. Returns whether it was there.
local function settle_one(prefix, deadlines, id, cost, tokens, position_arg)
  local record_key = prefix .. 'res:' .. id
  local record = redis.call('GET', record_key)
  if not record then
    return false
  end
  release(prefix, id, record, cost, tokens, position_arg)
  redis.call('DEL', record_key)
  redis.call('ZREM', deadlines, id)
  return true
end
