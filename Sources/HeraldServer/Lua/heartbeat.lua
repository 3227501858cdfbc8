-- Scripts.heartbeat (see its documentation in Sources/HeraldServer/Scripts*.swift).
--#include _renew_lease.lua
for _, e in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local channels = redis.call('SMEMBERS', ARGV[3] .. e)
  if #channels == 0 then
    redis.call('ZREM', KEYS[1], e)
  else
    out[#out + 1] = e
    out[#out + 1] = table.concat(channels, '\n')
  end
end
return out
