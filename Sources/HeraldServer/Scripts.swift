import HeraldCore
import HeraldRuntime
import HeraldRedis

/// The Lua scripts that make Redis the single source of truth for seq, epoch and history.
enum Scripts {
    /// Sequence and store a batch of one channel's messages, in order, in one call.
    /// KEYS: meta hash, history list, then the id keys of the messages that have a publisher id.
    /// ARGV: history size, dedupe seconds, epoch candidate, history TTL seconds (0: none),
    /// meta TTL seconds (0: none), the channel's watermarks on this node (`epoch seq` pairs
    /// separated by spaces, '' when it has none), then per message: frame head, frame tail,
    /// index in KEYS of its id key (0: none).
    /// Returns {epoch, behind, lost epoch, seq1, stored1, seq2, stored2, ...}: `stored` is ''
    /// for a new message (its frame is head .. seq .. tail) and the frame stored earlier in this
    /// epoch for a known id (a duplicate, also within the batch). Each message's seq is counted
    /// before its frame is pushed, so a failure part-way never leaves a frame whose seq the meta
    /// hash does not cover.
    /// A channel without a meta hash starts a new life: a history list left from an earlier one
    /// (only possible if the meta hash was lost) is dropped, so one list never mixes two epochs.
    /// So does a channel whose counter is behind this node's watermark of the epoch Redis holds
    /// (the newest or an older one this node remembers): Redis lost writes (it restarted from an
    /// older AOF or snapshot, or a replica that lagged took over), and counting on from there
    /// would give seqs already handed out to other messages. `behind` is then the seq Redis
    /// still held (-1: not behind) and `lost epoch` the epoch it held ('' when not behind). Id
    /// keys hold `epoch .. ' ' .. frame`, so a message remembered from an earlier epoch is
    /// stored again in this one.
    static let sequence = RedisScript(source: """
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
    """)

    /// Read a channel's epoch, newest seq and retained frames (newest first) in one consistent step.
    /// A channel seen for the first time gets its epoch here, so an empty channel's epoch is stable
    /// while anyone is subscribed. Reading keeps the meta hash alive: a channel that has had
    /// messages for another meta TTL, an empty one only for the short empty-channel TTL, so
    /// subscribes to names that never get a message cost Redis nothing lasting.
    /// KEYS: meta hash, history list. ARGV: epoch candidate, how many frames, meta TTL seconds
    /// (0: none), empty-channel TTL seconds.
    static let read = RedisScript(source: """
    local epoch = redis.call('HGET', KEYS[1], 'epoch')
    if not epoch then
      epoch = ARGV[1]
      redis.call('HSET', KEYS[1], 'epoch', epoch)
      redis.call('DEL', KEYS[2])
    end
    local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
    if seq == 0 then
      redis.call('EXPIRE', KEYS[1], ARGV[4])
    elseif ARGV[3] ~= '0' then
      redis.call('EXPIRE', KEYS[1], ARGV[3])
    end
    local frames = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
    return {epoch, seq, frames}
    """)

    /// Keeps the meta hashes of empty channels that still have subscribers alive for another
    /// empty-channel TTL, so their subscribers' epoch holds when the first message comes. A hash
    /// that is gone, or whose channel has had a message, is left alone.
    /// KEYS: meta hashes. ARGV: empty-channel TTL seconds. Returns how many were extended.
    static let keepEmptyAlive = RedisScript(source: """
    local n = 0
    for i = 1, #KEYS do
      if redis.call('EXISTS', KEYS[i]) == 1 and redis.call('HEXISTS', KEYS[i], 'seq') == 0 then
        redis.call('EXPIRE', KEYS[i], ARGV[1])
        n = n + 1
      end
    end
    return n
    """)
}

/// The `sequence` script's answer.
extension Scripts {
    struct Sequenced {
        let epoch: String
        /// The seq Redis still held when its counter was found behind this node's watermark
        /// (the channel then started `epoch`), or nil.
        let behind: UInt64?
        /// The epoch Redis held when it was found behind ("" otherwise).
        let lostEpoch: String
        /// Per message, its seq and the frame stored earlier (nil: a new message).
        let messages: [(seq: UInt64, stored: [UInt8]?)]
    }

    /// nil when the reply is an error or does not have `count` messages.
    static func sequenced(_ reply: RedisReply, count: Int) -> Sequenced? {
        guard case let .array(items) = reply, items.count == 3 + 2 * count, let epoch = items[0].text,
              let behind = items[1].integer, let lostEpoch = items[2].text else { return nil }
        var messages: [(seq: UInt64, stored: [UInt8]?)] = []
        messages.reserveCapacity(count)
        for i in stride(from: 3, to: items.count, by: 2) {
            guard let seq = items[i].integer, seq > 0, let stored = items[i + 1].bytes else { return nil }
            messages.append((UInt64(seq), stored.isEmpty ? nil : stored))
        }
        return Sequenced(epoch: epoch, behind: behind >= 0 ? UInt64(behind) : nil, lostEpoch: lostEpoch, messages: messages)
    }
}

/// The `read` script's answer as a snapshot.
extension Scripts {
    static func snapshot(from reply: RedisReply) throws(RedisError) -> (epoch: String, seq: UInt64, newestFirst: [[UInt8]]) {
        guard case let .array(items) = reply, items.count == 3, let epoch = items[0].text,
              let seq = items[1].integer, case let .array(frames) = items[2] else {
            if case let .error(e) = reply { throw RedisError("history read failed: \(e)") }
            throw RedisError("history read: unexpected reply \(reply)")
        }
        return (epoch, UInt64(seq), frames.compactMap(\.bytes))
    }
}

extension Scripts {
    /// Reads several channels with one pipelined round trip.
    static func readSnapshots(_ channels: [String], config: HeraldConfig, on redis: RedisConnection,
                              sha: inout String?) throws(RedisError) -> [String: HistorySnapshot] {
        let calls = channels.map { channel in
            (keys: [Array(config.metaKey(channel).utf8), Array(config.historyKey(channel).utf8)],
             args: [Array(randomHex(bytes: 6).utf8), Array(String(config.historySize).utf8),
                    Array(String(config.historyMetaTTLSeconds).utf8), Array(String(config.emptyChannelKeySeconds).utf8)])
        }
        let replies = try read.run(on: redis, sha: &sha, calls: calls)
        var result: [String: HistorySnapshot] = [:]
        for (channel, reply) in zip(channels, replies) {
            let s = try snapshot(from: reply)
            result[channel] = HistorySnapshot(epoch: s.epoch, seq: s.seq, newestFirst: s.newestFirst)
        }
        return result
    }
}
