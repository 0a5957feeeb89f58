-- The links of a chain to skip right now (chain.lua).
--
-- KEYS[1] cooldowns hash, then the circuit breaker of each deployment
-- ARGV[1] now, ARGV[2] probe lease (s), ARGV[3] '1' to honour cooldowns, ARGV[3 + i] deployment i
return chain_check(KEYS[1], {unpack(KEYS, 2)}, {unpack(ARGV, 4)}, tonumber(ARGV[1]), tonumber(ARGV[2]),
  ARGV[3] == '1')
