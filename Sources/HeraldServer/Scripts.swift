import HeraldCore
import HeraldRuntime
import HeraldRedis

/// The Lua scripts that make Redis the single source of truth for seq, epoch and history. Their
/// Lua is in `Lua/*.lua` (one file each, snippets `_*.lua` pulled in by `--#include`), embedded
/// at build time as `Lua.<name>` by the LuaScripts plugin; their contracts are documented here.
enum Scripts {
    /// Sequence and store a batch of messages of many channels, each channel's in order, in one
    /// call, and publish each channel's part on its live topic (`HeraldConfig.liveTopic`) in
    /// the same atomic step. Built by `sequenceCall`; see `StoreGroup` for one channel's part.
    /// KEYS: per channel its meta hash and history list, then the id keys of its messages that
    /// have a publisher id. ARGV: dedupe seconds, epoch candidate, meta TTL seconds (0: none),
    /// the live topic's head and tail (head .. channel .. tail), the publish command (PUBLISH, or
    /// SPUBLISH on a Redis Cluster), then per channel: channel, index in KEYS of its meta hash, history
    /// size, history TTL seconds (0: none), its watermarks on this node (`epoch seq` pairs
    /// separated by spaces, '' when it has none), message count, then per message: frame head,
    /// frame tail, index in KEYS of its id key (0: none).
    /// Returns one answer per channel: {epoch, behind, lost epoch, seq1, stored1, seq2, stored2,
    /// ...}, or an error for a channel whose keys Redis refused (the others are still stored).
    /// `stored` is '' for a new message (its frame is head .. seq .. tail) and the frame stored
    /// earlier in this epoch for a known id (a duplicate, also within the batch). Each message's
    /// seq is counted before its frame is pushed, so a failure part-way never leaves a frame
    /// whose seq the meta hash does not cover. The live topic gets every message of the call,
    /// duplicates too, as `LiveBatch` lines.
    /// A channel without a meta hash starts a new life: a history list left from an earlier one
    /// (only possible if the meta hash was lost) is dropped, so one list never mixes two epochs.
    /// So does a channel whose counter is behind this node's watermark of the epoch Redis holds
    /// (the newest or an older one this node remembers): Redis lost writes (it restarted from an
    /// older AOF or snapshot, or a replica that lagged took over), and counting on from there
    /// would give seqs already handed out to other messages. `behind` is then the seq Redis
    /// still held (-1: not behind) and `lost epoch` the epoch it held ('' when not behind). Id
    /// keys hold `epoch .. ' ' .. frame`, so a message remembered from an earlier epoch is
    /// stored again in this one.
    static let sequence = RedisScript(source: Lua.sequence)

    /// Read a channel's epoch, newest seq and retained frames (newest first) in one consistent step.
    /// A channel seen for the first time gets its epoch here, so an empty channel's epoch is stable
    /// while anyone is subscribed. Reading keeps the meta hash alive: a channel that has had
    /// messages for another meta TTL, an empty one only for the short empty-channel TTL, so
    /// subscribes to names that never get a message cost Redis nothing lasting.
    /// KEYS: meta hash, history list. ARGV: epoch candidate, how many frames, meta TTL seconds
    /// (0: none), empty-channel TTL seconds.
    static let read = RedisScript(source: Lua.read)

    /// Keeps the meta hashes of empty channels that still have subscribers alive for another
    /// empty-channel TTL, so their subscribers' epoch holds when the first message comes. A hash
    /// that is gone, or whose channel has had a message, is left alone.
    /// KEYS: meta hashes. ARGV: empty-channel TTL seconds. Returns how many were extended.
    static let keepEmptyAlive = RedisScript(source: Lua.keepEmptyAlive)
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
             args: [Array(randomHex(bytes: 6).utf8), Array(String(config.historySize(of: channel)).utf8),
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

/// Presence (see `PresenceStream`): the member hash of each presence channel, sequenced changes
/// in the channel's presence stream, and one lease per node instance.
extension Scripts {
    /// Applies one node's `PresenceChange` to a channel's members and sequences what changed, as
    /// at most one `leave` and one `join` frame in the presence stream, in one atomic step.
    /// Joins of an instance whose lease has run out are dropped (its members were, or are about to
    /// be, reaped; it syncs when it renews). A reap removes the members of an instance whose lease
    /// has run out and forgets the channel in that instance's set (and the instance once the set
    /// is empty); a reap of an instance that renewed meanwhile does nothing. Leaves of members
    /// that are not there, and joins of members already there unchanged, change nothing: a change
    /// RabbitMQ delivers twice is applied once.
    /// KEYS: stream meta hash, stream history list, member hash, leases zset, the publishing
    /// instance's channel set. ARGV: history size, epoch candidate, node-set key prefix, channel,
    /// instance, sync ('1'/'0'), leave count L, join count J, channel as a JSON string, meta TTL
    /// (0: none), the stream's live topic, the stream's name, the publish command (PUBLISH or
    /// SPUBLISH), then L client ids, J (client, member)
    /// pairs, then the instances to reap. The frames are published on the stream's live topic.
    /// Returns {epoch, leave seq, leave frame, join seq, join frame} (seq 0 and '' when none).
    static let presence = RedisScript(source: Lua.presence)

    /// A presence stream's snapshot: epoch, newest seq, retained changes (newest first) and the
    /// member list, in one consistent step. KEYS: stream meta hash, stream history list, member
    /// hash. ARGV: epoch candidate, how many frames.
    static let presenceRead = RedisScript(source: Lua.presenceRead)

    /// Renews this instance's lease and lists the expired instances with the channels each had
    /// members on (an expired instance with none is forgotten here). KEYS: leases zset. ARGV:
    /// instance, lease ms, node-set key prefix. Returns {lapsed (1: the lease had run out or
    /// never existed), instance1, "channel\\nchannel…", …}.
    static let heartbeat = RedisScript(source: Lua.heartbeat)

    static func presenceCall(channel: String, change: PresenceChange, instance: String, config: HeraldConfig) -> (keys: [[UInt8]], args: [[UInt8]]) {
        let stream = PresenceStream.name(of: channel)
        let keys = [config.metaKey(stream), config.historyKey(stream), config.presenceMembersKey(channel),
                    config.presenceLeasesKey, config.presenceNodePrefix + instance].map { Array($0.utf8) }
        var args = [String(config.presenceHistorySize), randomHex(bytes: 6), config.presenceNodePrefix, channel, instance,
                    change.sync ? "1" : "0", String(change.leaves.count), String(change.joins.count), JSON.quoted(channel),
                    String(config.historyMetaTTLSeconds), config.liveTopic(stream), stream, config.livePublish].map { Array($0.utf8) }
        args += change.leaves.map { Array($0.utf8) }
        for (client, member) in change.joins {
            args.append(Array(client.utf8))
            args.append(member)
        }
        args += change.reaps.map { Array($0.utf8) }
        return (keys, args)
    }

    /// The presence script's frames as sequenced messages of the stream, or nil for an answer
    /// that is not one.
    static func presenceFrames(_ reply: RedisReply, stream: String) -> [SequencedMessage]? {
        guard case let .array(items) = reply, items.count == 5, let epoch = items[0].text else { return nil }
        var out: [SequencedMessage] = []
        for i in [1, 3] {
            guard let seq = items[i].integer, let frame = items[i + 1].bytes else { return nil }
            if seq > 0 { out.append(SequencedMessage(channel: stream, epoch: epoch, seq: UInt64(seq), frame: frame)) }
        }
        return out
    }

    /// Presence streams' snapshots (with their member lists), one pipelined round trip.
    static func readPresenceSnapshots(_ streams: [String], config: HeraldConfig, on redis: RedisConnection,
                                      sha: inout String?) throws(RedisError) -> [String: HistorySnapshot] {
        let calls = streams.map { stream in
            (keys: [config.metaKey(stream), config.historyKey(stream),
                    config.presenceMembersKey(PresenceStream.channel(of: stream) ?? stream)].map { Array($0.utf8) },
             args: [Array(randomHex(bytes: 6).utf8), Array(String(config.presenceHistorySize).utf8)])
        }
        let replies = try presenceRead.run(on: redis, sha: &sha, calls: calls)
        var result: [String: HistorySnapshot] = [:]
        for (stream, reply) in zip(streams, replies) {
            guard case let .array(items) = reply, items.count == 4, let epoch = items[0].text, let seq = items[1].integer,
                  case let .array(frames) = items[2], case let .array(members) = items[3] else {
                if case let .error(e) = reply { throw RedisError("presence read failed: \(e)") }
                throw RedisError("presence read: unexpected reply \(reply)")
            }
            result[stream] = HistorySnapshot(epoch: epoch, seq: UInt64(seq), newestFirst: frames.compactMap(\.bytes),
                                             members: members.compactMap(\.bytes))
        }
        return result
    }
}
