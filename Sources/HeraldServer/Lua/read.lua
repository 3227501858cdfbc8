-- Scripts.read (see its documentation in Sources/HeraldServer/Scripts*.swift).
local candidate = ARGV[1]
--#include _open_epoch.lua
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq == 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
elseif ARGV[3] ~= '0' then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
local frames = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
return {epoch, seq, frames}
