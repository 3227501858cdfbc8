import HeraldCore
import HeraldRedis

/// The Lua scripts that make Redis the single source of truth for seq, epoch and history.
enum Scripts {
    /// Sequence and store one message, atomically.
    /// KEYS: meta hash, history list, id key ('' when the message has no publisher id).
    /// ARGV: frame head, frame tail, history size, dedupe seconds, epoch candidate,
    /// history TTL seconds (0: none), meta TTL seconds (0: none).
    /// Returns {seq, frame, epoch, duplicate(0/1)}. A known id returns what was stored for it.
    /// A channel without a meta hash starts a new life: a history list left from an earlier one
    /// (only possible if the meta hash was lost) is dropped, so one list never mixes two epochs.
    static let sequence = RedisScript(source: """
    local epoch = redis.call('HGET', KEYS[1], 'epoch')
    if not epoch then
      epoch = ARGV[5]
      redis.call('HSET', KEYS[1], 'epoch', epoch)
      redis.call('DEL', KEYS[2])
    end
    if KEYS[3] ~= '' then
      local stored = redis.call('GET', KEYS[3])
      if stored then
        local seq = tonumber(string.match(stored, ',"seq":(%d+),'))
        return {seq, stored, epoch, 1}
      end
    end
    local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
    local frame = ARGV[1] .. seq .. ARGV[2]
    redis.call('LPUSH', KEYS[2], frame)
    redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
    if ARGV[6] ~= '0' then redis.call('EXPIRE', KEYS[2], ARGV[6]) end
    if ARGV[7] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[7]) end
    if KEYS[3] ~= '' then
      redis.call('SET', KEYS[3], frame, 'EX', tonumber(ARGV[4]))
    end
    return {seq, frame, epoch, 0}
    """)

    /// Read a channel's epoch, newest seq and retained frames (newest first) in one consistent step.
    /// A channel seen for the first time gets its epoch here, so an empty channel's epoch is stable.
    /// Reading a channel keeps its meta hash alive for another meta TTL.
    /// KEYS: meta hash, history list. ARGV: epoch candidate, how many frames, meta TTL seconds (0: none).
    static let read = RedisScript(source: """
    local epoch = redis.call('HGET', KEYS[1], 'epoch')
    if not epoch then
      epoch = ARGV[1]
      redis.call('HSET', KEYS[1], 'epoch', epoch)
      redis.call('DEL', KEYS[2])
    end
    if ARGV[3] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
    local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
    local frames = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
    return {epoch, seq, frames}
    """)
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
             args: [Array(randomHex(bytes: 6).utf8), Array(String(config.historySize).utf8), Array(String(config.historyMetaTTLSeconds).utf8)])
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
