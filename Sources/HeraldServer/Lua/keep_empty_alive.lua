-- Scripts.keepEmptyAlive (see its documentation in Sources/HeraldServer/Scripts*.swift).
local n = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 and redis.call('HEXISTS', KEYS[i], 'seq') == 0 then
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    n = n + 1
  end
end
return n
