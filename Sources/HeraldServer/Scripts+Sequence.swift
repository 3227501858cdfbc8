import HeraldCore
import HeraldRuntime
import HeraldRedis

/// One channel's part of a `sequence` call: its messages in order, each with the publisher's
/// id when it gave one (de-duplicated by it).
struct StoreGroup {
    var channel: String
    var envelopes: [MessageEnvelope] = []
    var publisherIDs: [String?] = []
}

extension Scripts {
    /// The `sequence` call that stores `groups` (each channel once), with this node's
    /// watermarks of each channel (`marks`, parallel to `groups`). A channel's namespace may set
    /// its own history size and TTL.
    static func sequenceCall(_ groups: [StoreGroup], marks: [[ChannelWatermarks.Mark]],
                             config: HeraldConfig) -> (keys: [[UInt8]], args: [[UInt8]]) {
        var keys: [[UInt8]] = []
        var args = [String(config.dedupeSeconds), randomHex(bytes: 6), String(config.historyMetaTTLSeconds),
                    config.liveTopicHead, config.liveTopicTail, config.livePublish].map { Array($0.utf8) }
        let none = Array("0".utf8)
        keys.reserveCapacity(2 * groups.count)
        args.reserveCapacity(args.count + groups.reduce(0) { $0 + 6 + 3 * $1.envelopes.count })
        for (group, mark) in zip(groups, marks) {
            let namespace = config.namespace(of: group.channel)
            keys.append(Array(config.metaKey(group.channel).utf8))
            keys.append(Array(config.historyKey(group.channel).utf8))
            args.append(Array(group.channel.utf8))
            args.append(Array(String(keys.count - 1).utf8))
            args.append(Array(String(namespace?.historySize ?? config.historySize).utf8))
            args.append(Array(String(namespace?.historyTTLSeconds ?? config.historyTTLSeconds).utf8))
            args.append(Array(Watermarks.argument(mark).utf8))
            args.append(Array(String(group.envelopes.count).utf8))
            for (envelope, publisherID) in zip(group.envelopes, group.publisherIDs) {
                args.append(envelope.head)
                args.append(envelope.tail)
                if let publisherID {
                    keys.append(Array(config.idKey(group.channel, publisherID).utf8))
                    args.append(Array(String(keys.count).utf8))
                } else {
                    args.append(none)
                }
            }
        }
        return (keys, args)
    }

    /// How channels' groups are split into `sequence` calls: all in one on a single Redis; on a
    /// Redis Cluster one call per hash slot (a script's keys must share one), with the groups
    /// ordered by slot so that each call's are adjacent. `order` lists the groups' indices in
    /// that order, `sizes` how many groups each call takes.
    static func sequencePlan(_ channels: [String], config: HeraldConfig) -> (order: [Int], sizes: [Int]) {
        guard config.redisCluster, channels.count > 1 else { return (Array(channels.indices), channels.isEmpty ? [] : [channels.count]) }
        let slots = channels.map { ClusterSlot.of(config.metaKey($0)) }
        let order = channels.indices.sorted { (slots[$0], $0) < (slots[$1], $1) }
        var sizes: [Int] = []
        var last = -1
        for i in order {
            if slots[i] == last { sizes[sizes.count - 1] += 1 } else { sizes.append(1) }
            last = slots[i]
        }
        return (order, sizes)
    }

    /// The `sequence` calls of `groups` (already in `sequencePlan` order), `sizes[i]` groups each.
    static func sequenceCalls(_ groups: [StoreGroup], sizes: [Int], marks: [[ChannelWatermarks.Mark]],
                              config: HeraldConfig) -> [(keys: [[UInt8]], args: [[UInt8]])] {
        var calls: [(keys: [[UInt8]], args: [[UInt8]])] = []
        var start = 0
        for n in sizes {
            calls.append(sequenceCall(Array(groups[start..<start + n]), marks: Array(marks[start..<start + n]), config: config))
            start += n
        }
        return calls
    }

    /// The replies of the calls `sequenceCalls` made, one per group in order; a call answered
    /// with an error gives that error to each of its groups.
    static func sequenceReplies(_ replies: [RedisReply], sizes: [Int]) -> [RedisReply] {
        zip(replies, sizes).flatMap { reply, n in sequenceReplies(reply, groups: n) ?? Array(repeating: reply, count: n) }
    }

    /// The `sequence` reply split per channel (parallel to the call's groups); nil when Redis
    /// answered something else (an error for the whole call).
    static func sequenceReplies(_ reply: RedisReply, groups: Int) -> [RedisReply]? {
        guard case let .array(items) = reply, items.count == groups else { return nil }
        return items
    }
}

extension Worker {
    /// When the `sequence` script found Redis holding fewer messages of `channel` than this node
    /// had seen handed out (it lost writes) and started the channel over in a new epoch rather
    /// than count the same seqs again: counted and logged. Subscribers see the new epoch and
    /// resume (`recovered: false`).
    func reportIfBehind(_ channel: String, _ answer: Scripts.Sequenced) {
        guard let held = answer.behind else { return }
        let mark = watermarks.marks([channel])[0].first { $0.epoch == answer.lostEpoch }
        metrics.epochResets.add(1)
        logger.error("Redis lost writes: it was behind what this node had seen handed out; the channel starts a new epoch",
                     metadata: ["channel": "\(channel)", "redis_seq": "\(held)", "seen_seq": "\(mark?.seq ?? 0)",
                                "old_epoch": "\(answer.lostEpoch)", "new_epoch": "\(answer.epoch)"])
    }
}
