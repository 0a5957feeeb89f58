-- On a Redis Cluster, the chain check of an admitted call (chain.lua), in the deployments' own
-- slot, right after its admission: KEYS[1] the cooldowns hash, then each deployment's circuit
-- breaker; ARGV[1] now, ARGV[2] the probe lease (s), then each deployment.
return chain_check(KEYS[1], {unpack(KEYS, 2)}, {unpack(ARGV, 3)}, tonumber(ARGV[1]), tonumber(ARGV[2]), true)
