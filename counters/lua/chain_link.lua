-- On a Redis Cluster, one link of an admitted call's chain (chain.lua's link_check), in the
-- deployment's own slot: KEYS[1] its cooldown, KEYS[2] its circuit breaker; ARGV[1] now, ARGV[2]
-- the probe lease (s), ARGV[3] '1' if this caller may take the link's probe.
return link_check(KEYS[1], KEYS[2], number(ARGV[1]), number(ARGV[2]), ARGV[3] == '1')
