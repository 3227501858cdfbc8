/// What the live thread does with each sequenced message from Redis PUB/SUB, decided
/// without I/O: pass it on, drop it as a copy already passed on, or first fill the seqs it skips
/// from Redis. Per channel it remembers the newest (epoch, seq) handed on.
///
/// - Important: not thread-safe; owned by the live consumer's thread.
public struct LiveGapTracker {
    public enum Decision: Equatable {
        case deliver
        /// A copy of a message already handed on.
        case skip
        /// Seqs `after + 1 ..< before` are missing: read them from Redis before delivering this one.
        case repair(after: UInt64, before: UInt64)
    }

    /// What to do about a channel after the PUB/SUB connection was gone for a while.
    public enum CatchUp: Equatable {
        case upToDate
        /// Seqs `after + 1 ..< before` were sequenced meanwhile: read them from Redis.
        case repair(after: UInt64, before: UInt64)
        /// Nothing of the channel was seen live yet, so what was missed is unknown: hand on
        /// every retained message `after + 1 ..< before` (rings keep those that continue them).
        case seed(after: UInt64, before: UInt64)
        /// The channel has another epoch now: its subscribers must resume.
        case broken
    }

    private var last: [String: (epoch: String, seq: UInt64)] = [:]

    public init() {}

    /// The channels seen so far.
    public var channels: [String] { Array(last.keys) }

    /// Decides about `m` and records it as handed on (unless it is skipped).
    public mutating func see(_ m: SequencedMessage) -> Decision {
        var decision = Decision.deliver
        if let previous = last[m.channel], previous.epoch == m.epoch {
            if m.seq <= previous.seq { return .skip }
            if m.seq > previous.seq + 1 { decision = .repair(after: previous.seq, before: m.seq) }
        }
        last[m.channel] = (m.epoch, m.seq)
        return decision
    }

    /// Forgets a channel the node no longer subscribes to.
    public mutating func forget(_ channel: String) { last[channel] = nil }

    /// After a reconnect: compares what was handed on with the channel's snapshot in Redis, and
    /// records the snapshot's seq as handed on (the caller delivers the repair or the break).
    public mutating func catchUp(_ channel: String, snapshot: HistorySnapshot) -> CatchUp {
        guard let previous = last[channel] else {
            guard let oldest = snapshot.oldestSeq, snapshot.seq > 0 else { return .upToDate }
            last[channel] = (snapshot.epoch, snapshot.seq)
            return .seed(after: oldest - 1, before: snapshot.seq + 1)
        }
        if snapshot.epoch != previous.epoch {
            last[channel] = nil
            return .broken
        }
        guard snapshot.seq > previous.seq else { return .upToDate }
        last[channel] = (previous.epoch, snapshot.seq)
        return .repair(after: previous.seq, before: snapshot.seq + 1)
    }

    /// The messages `after + 1 ..< before` of `epoch` from a snapshot, or nil when the snapshot
    /// is of another epoch or no longer holds all of them (then subscribers must resume).
    public static func fill(_ snapshot: HistorySnapshot, channel: String, epoch: String,
                            after: UInt64, before: UInt64) -> [SequencedMessage]? {
        guard snapshot.epoch == epoch, let oldest = snapshot.oldestSeq, oldest <= after + 1 else { return nil }
        var out: [SequencedMessage] = []
        for (i, frame) in snapshot.frames.enumerated() {
            let seq = oldest + UInt64(i)
            if seq > after && seq < before { out.append(SequencedMessage(channel: channel, epoch: epoch, seq: seq, frame: frame)) }
        }
        return out.count == Int(before - after - 1) ? out : nil
    }
}
