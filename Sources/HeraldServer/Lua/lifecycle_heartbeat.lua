-- Scripts.lifecycleHeartbeat (see its documentation in Sources/HeraldServer/Scripts*.swift).
--#include _renew_lease.lua
for _, e in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], e)
  for _, ch in ipairs(redis.call('SMEMBERS', ARGV[4] .. e)) do
    local key = ARGV[5] .. ch
    if redis.call('SREM', key, e) == 1 and redis.call('SCARD', key) == 0 then
      redis.call('RPUSH', ARGV[6] .. e, ch, redis.call('INCR', KEYS[2]))
    end
  end
  redis.call('DEL', ARGV[4] .. e)
  redis.call('HSETNX', KEYS[3], e, '')
end
local claims = redis.call('HGETALL', KEYS[3])
for i = 1, #claims, 2 do
  local e, owner = claims[i], claims[i + 1]
  local ownerLease = owner ~= '' and redis.call('ZSCORE', KEYS[1], owner)
  if owner ~= ARGV[1] and not (ownerLease and tonumber(ownerLease) > now) then
    redis.call('HSET', KEYS[3], e, ARGV[1])
    out[#out + 1] = e
    out[#out + 1] = redis.call('HGETALL', ARGV[3] .. e)
    out[#out + 1] = redis.call('LRANGE', ARGV[6] .. e, 0, -1)
  end
end
return out
