-- Included (--#include): renews the lease of instance ARGV[1] in the leases zset KEYS[1] for
-- ARGV[2] ms from Redis's clock (`now`); `out` starts with 1 if the lease had run out or never
-- existed. Every instance in the zset with a score up to `now` has an expired lease.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local out = {(not old or tonumber(old) <= now) and 1 or 0}
