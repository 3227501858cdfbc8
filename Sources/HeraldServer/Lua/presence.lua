-- Scripts.presence (see its documentation in Sources/HeraldServer/Scripts*.swift).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function alive(instance)
  local s = redis.call('ZSCORE', KEYS[4], instance)
  return s and tonumber(s) > now
end
local candidate = ARGV[2]
--#include _open_epoch.lua
local channel, instance = ARGV[4], ARGV[5]
local nl, nj = tonumber(ARGV[7]), tonumber(ARGV[8])
local first = 14
local left, joined = {}, {}
-- Removes the members of instance `who`, except the clients in `keep`.
local function removeInstance(who, keep)
  local prefix = who .. '.'
  local all = redis.call('HGETALL', KEYS[3])
  for k = 1, #all, 2 do
    if string.sub(all[k], 1, #prefix) == prefix and not keep[all[k]] then
      redis.call('HDEL', KEYS[3], all[k])
      left[#left + 1] = all[k + 1]
    end
  end
end
local joins = {}
for k = 0, nj - 1 do
  joins[#joins + 1] = {ARGV[first + nl + 2 * k], ARGV[first + nl + 2 * k + 1]}
end
local instanceAlive = alive(instance)
if ARGV[6] == '1' then
  local wanted = {}
  if instanceAlive then for _, j in ipairs(joins) do wanted[j[1]] = true end end
  removeInstance(instance, wanted)
end
for k = 0, nl - 1 do
  local client = ARGV[first + k]
  local m = redis.call('HGET', KEYS[3], client)
  if m then
    redis.call('HDEL', KEYS[3], client)
    left[#left + 1] = m
  end
end
if #joins > 0 and instanceAlive then
  for _, j in ipairs(joins) do
    local old = redis.call('HGET', KEYS[3], j[1])
    if old ~= j[2] then
      if old then left[#left + 1] = old end
      redis.call('HSET', KEYS[3], j[1], j[2])
      joined[#joined + 1] = j[2]
    end
  end
  redis.call('SADD', KEYS[5], channel)
end
for k = first + nl + 2 * nj, #ARGV do
  local dead = ARGV[k]
  if not alive(dead) then
    removeInstance(dead, {})
    local set = ARGV[3] .. dead
    redis.call('SREM', set, channel)
    if redis.call('SCARD', set) == 0 then
      redis.call('DEL', set)
      redis.call('ZREM', KEYS[4], dead)
    end
  end
end
local out = {epoch}
local live = {}
local function emit(kind, list)
  if #list == 0 then
    out[#out + 1] = 0
    out[#out + 1] = ''
    return
  end
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  local frame = '{"type":"' .. kind .. '","channel":' .. ARGV[9] .. ',"presence_epoch":"' .. epoch ..
    '","presence_seq":' .. seq .. ',"members":[' .. table.concat(list, ',') .. ']}'
  redis.call('LPUSH', KEYS[2], frame)
  out[#out + 1] = seq
  out[#out + 1] = frame
  live[#live + 1] = seq .. '\t' .. epoch .. '\t' .. ARGV[12] .. '\t' .. frame .. '\n'
end
emit('leave', left)
emit('join', joined)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[1]) - 1)
if ARGV[10] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[10]) else redis.call('PERSIST', KEYS[1]) end
-- The nodes serving the stream's subscribers hear of the changes in the same atomic step.
if #live > 0 then redis.call(ARGV[13], ARGV[11], table.concat(live)) end
return out
