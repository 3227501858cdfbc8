/// The newest `(epoch, seq)` this node has seen handed out for each channel: the memory that
/// lets the sequencer notice that Redis forgot writes (a crash with `appendfsync everysec`, an
/// RDB snapshot restored, a failover to a replica that lagged) instead of counting the same seqs
/// again for different messages. Redis's own counter is only trusted when it is not behind it.
///
/// Bounded: it remembers at least the `capacity` channels seen most recently (two generations;
/// when the current one is full, the older is forgotten). A forgotten channel loses only this
/// extra check; its seqs still come from Redis.
public struct ChannelWatermarks: Sendable {
    public struct Mark: Equatable, Sendable {
        public let epoch: String
        public let seq: UInt64
        public init(epoch: String, seq: UInt64) {
            self.epoch = epoch
            self.seq = seq
        }
    }

    public let capacity: Int
    private var current: [String: Mark] = [:]
    private var previous: [String: Mark] = [:]

    public init(capacity: Int = 200_000) {
        precondition(capacity >= 2)
        self.capacity = capacity
    }

    public func mark(_ channel: String) -> Mark? { current[channel] ?? previous[channel] }

    /// Records a seq seen for `channel`. Within one epoch the mark only rises (a redelivered
    /// duplicate keeps its older, lower seq); a different epoch replaces it, since epochs have no
    /// order and the newest observation of the channel is the one to hold.
    public mutating func record(_ channel: String, epoch: String, seq: UInt64) {
        if let known = mark(channel), known.epoch == epoch, known.seq >= seq {
            if current[channel] == nil { insert(channel, known) }
            return
        }
        insert(channel, Mark(epoch: epoch, seq: seq))
    }

    private mutating func insert(_ channel: String, _ mark: Mark) {
        if current[channel] == nil && current.count >= capacity / 2 {
            previous = current
            current = [:]
            current.reserveCapacity(capacity / 2)
        }
        current[channel] = mark
    }

    public var count: Int { current.count + previous.filter { current[$0.key] == nil }.count }
}
