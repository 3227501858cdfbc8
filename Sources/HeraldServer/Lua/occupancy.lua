-- Scripts.occupancy (see its documentation in Sources/HeraldServer/Scripts*.swift).
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[2], ARGV[2])
  if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then
    return redis.call('INCR', KEYS[3])
  end
else
  redis.call('SREM', KEYS[2], ARGV[2])
  if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
    return redis.call('INCR', KEYS[3])
  end
end
return 0
