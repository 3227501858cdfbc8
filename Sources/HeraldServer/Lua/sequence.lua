-- Scripts.sequence (see its documentation in Sources/HeraldServer/Scripts*.swift).
local dedupe, candidate, metaTTL = tonumber(ARGV[1]), ARGV[2], ARGV[3]
-- A channel's live topic is ARGV[4] .. channel .. ARGV[5], published with ARGV[6]: PUBLISH, or
-- SPUBLISH on a Redis Cluster (the topic then carries the channel's hash tag, as its keys do).
local topicHead, topicTail, publish = ARGV[4], ARGV[5], ARGV[6]

-- One channel's messages: ARGV[a] channel, ARGV[a+1] index of its meta hash in KEYS (its
-- history list follows), size, history TTL, watermarks, message count, then per message head,
-- tail, id key index. Returns the channel's answer and the ARGV index after its messages.
local function store(a)
  local channel, kb = ARGV[a], tonumber(ARGV[a + 1])
  local meta, history = KEYS[kb], KEYS[kb + 1]
  local n = tonumber(ARGV[a + 5])
  local last = a + 5 + 3 * n
  local epoch = redis.call('HGET', meta, 'epoch')
  local behind, lost = -1, ''
  if epoch then
    for e, s in string.gmatch(ARGV[a + 4], '(%S+) (%d+)') do
      if e == epoch then
        local held = tonumber(redis.call('HGET', meta, 'seq') or '0')
        if held < tonumber(s) then
          behind, lost, epoch = held, epoch, false
          redis.call('DEL', meta)
        end
        break
      end
    end
  end
  if not epoch then
    epoch = candidate
    redis.call('HSET', meta, 'epoch', epoch)
    redis.call('DEL', history)
  end
  local out = {epoch, behind, lost}
  local live = {}
  local prefix = epoch .. ' '
  local tab = '\t' .. epoch .. '\t' .. channel .. '\t'
  for i = a + 6, last, 3 do
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
    local seq, frame
    if stored then
      seq, frame = tonumber(string.match(stored, ',"seq":(%d+),')), stored
      out[#out + 1] = seq
      out[#out + 1] = stored
    else
      seq = redis.call('HINCRBY', meta, 'seq', 1)
      frame = ARGV[i] .. seq .. ARGV[i + 1]
      redis.call('LPUSH', history, frame)
      if k > 0 then redis.call('SET', KEYS[k], prefix .. frame, 'EX', dedupe) end
      out[#out + 1] = seq
      out[#out + 1] = ''
    end
    live[#live + 1] = seq .. tab .. frame .. '\n'
  end
  redis.call('LTRIM', history, 0, tonumber(ARGV[a + 2]) - 1)
  if ARGV[a + 3] ~= '0' then redis.call('EXPIRE', history, ARGV[a + 3]) end
  -- The meta hash of a channel that was empty until now carries the short empty-channel TTL:
  -- from its first message on it lives for the meta TTL (or forever).
  if metaTTL ~= '0' then redis.call('EXPIRE', meta, metaTTL) else redis.call('PERSIST', meta) end
  -- Every node serving a subscriber of the channel hears of it (duplicates too: a crash may
  -- have come between storing and this publish), in the same atomic step as the store.
  redis.call(publish, topicHead .. channel .. topicTail, table.concat(live))
  return out, last + 1
end

local replies = {}
local a = 7
while a <= #ARGV do
  local ok, out, nextA = pcall(store, a)
  if ok then
    replies[#replies + 1] = out
    a = nextA
  else
    -- This channel's keys are refused (a key of the wrong type): the others are still stored.
    replies[#replies + 1] = redis.error_reply(type(out) == 'table' and tostring(out.err) or tostring(out))
    a = a + 6 + 3 * tonumber(ARGV[a + 5])
  end
end
return replies
