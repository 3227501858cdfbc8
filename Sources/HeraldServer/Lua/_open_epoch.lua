-- Included (--#include) after `local candidate = ARGV[n]`: `epoch` is the channel's (meta hash
-- KEYS[1]), or the candidate for a channel starting a new life, whose history list (KEYS[2])
-- left from an earlier one is dropped.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = candidate
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
