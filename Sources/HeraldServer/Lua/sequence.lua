-- Scripts.sequence (see its documentation in Sources/HeraldServer/Scripts*.swift).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local behind = -1
local lost = ''
if epoch then
  for e, s in string.gmatch(ARGV[6], '(%S+) (%d+)') do
    if e == epoch then
      local held = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
      if held < tonumber(s) then
        behind = held
        lost = epoch
        epoch = false
        redis.call('DEL', KEYS[1])
      end
      break
    end
  end
end
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
local out = {epoch, behind, lost}
local prefix = epoch .. ' '
for i = 7, #ARGV, 3 do
  local k = tonumber(ARGV[i + 2])
  local stored = false
  if k > 0 then
    stored = redis.call('GET', KEYS[k])
    if stored then
      if string.sub(stored, 1, #prefix) == prefix then
        stored = string.sub(stored, #prefix + 1)
      elseif string.sub(stored, 1, 1) ~= '{' then
        stored = false
      end
    end
  end
  if stored then
    out[#out + 1] = tonumber(string.match(stored, ',"seq":(%d+),'))
    out[#out + 1] = stored
  else
    local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
    local frame = ARGV[i] .. seq .. ARGV[i + 1]
    redis.call('LPUSH', KEYS[2], frame)
    if k > 0 then redis.call('SET', KEYS[k], prefix .. frame, 'EX', tonumber(ARGV[2])) end
    out[#out + 1] = seq
    out[#out + 1] = ''
  end
end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[1]) - 1)
if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
-- The meta hash of a channel that was empty until now carries the short empty-channel TTL:
-- from its first message on it lives for the meta TTL (or forever).
if ARGV[5] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[5]) else redis.call('PERSIST', KEYS[1]) end
return out
