-- An Idempotency-Key's entry (gateway/idempotency.py): a hash of the fingerprint of the request
-- that claimed it (f) and, once that call succeeded, its answer (a).
-- KEYS[1] the entry. ARGV[1] the step: claim, keep or drop; ARGV[2] the request's fingerprint;
-- claim: ARGV[3] how long a claim lives without an answer (ms); keep: ARGV[3] the answer,
-- ARGV[4] how long it is kept (ms).
-- Reply: claim -> {claimed} (the caller runs the call), {pending} (another runs it),
-- {done, answer} or {reused} (another request's key); keep and drop -> 1 if done, else 0.
local step, fingerprint = ARGV[1], ARGV[2]
local claimed_by = redis.call('HGET', KEYS[1], 'f')
if step == 'claim' then
  if not claimed_by then
    redis.call('HSET', KEYS[1], 'f', fingerprint)
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return {'claimed'}
  end
  if claimed_by ~= fingerprint then
    return {'reused'}
  end
  local answer = redis.call('HGET', KEYS[1], 'a')
  if answer then
    return {'done', answer}
  end
  return {'pending'}
end
-- Only the claim's own call keeps or drops it, and an answer kept stays.
if claimed_by ~= fingerprint or redis.call('HEXISTS', KEYS[1], 'a') == 1 then
  return 0
end
if step == 'keep' then
  redis.call('HSET', KEYS[1], 'a', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
else
  redis.call('DEL', KEYS[1])
end
return 1
