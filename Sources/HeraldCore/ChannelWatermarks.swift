/// The newest seqs this node has seen handed out for each channel, per epoch: the memory that
/// lets the sequencer notice that Redis forgot writes (a crash with `appendfsync everysec`, an
/// RDB snapshot restored, a failover to a replica that lagged) instead of counting the same seqs
/// again for different messages. Redis's own counter is only trusted when it is not behind the
/// mark of the epoch Redis holds.
///
/// Each channel keeps the marks of its last `epochsPerChannel` epochs, newest first, because
/// Redis can go back to an epoch this node has already left: a Sentinel failover that is turned
/// back, or a snapshot restored twice. That older epoch's counter must then be checked against
/// what was handed out in it, not against the newest epoch's.
///
/// Bounded: it remembers at least the `capacity` channels seen most recently (two generations;
/// when the current one is full, the older is forgotten). A forgotten channel loses only this
/// extra check; its seqs still come from Redis.
public struct ChannelWatermarks: Sendable {
    public struct Mark: Equatable, Sendable {
        public let epoch: String
        public let seq: UInt64
        public init(epoch: String, seq: UInt64) { (self.epoch, self.seq) = (epoch, seq) }
    }

    public let capacity: Int
    public let epochsPerChannel: Int
    private var current: [String: [Mark]] = [:]
    private var previous: [String: [Mark]] = [:]

    public init(capacity: Int = 200_000, epochsPerChannel: Int = 4) {
        precondition(capacity >= 2 && epochsPerChannel >= 1)
        self.capacity = capacity
        self.epochsPerChannel = epochsPerChannel
    }

    /// The mark of the epoch seen most recently.
    public func mark(_ channel: String) -> Mark? { marks(channel).first }

    /// The channel's marks, the epoch seen most recently first.
    public func marks(_ channel: String) -> [Mark] { current[channel] ?? previous[channel] ?? [] }

    /// Records a seq seen for `channel`. Within one epoch the mark only rises (a redelivered
    /// duplicate keeps its older, lower seq). The epoch becomes the channel's newest (epochs have
    /// no order: the one observed last is the one Redis holds now); the oldest is forgotten past
    /// `epochsPerChannel`.
    public mutating func record(_ channel: String, epoch: String, seq: UInt64) {
        var list = marks(channel)
        if let first = list.first, first.epoch == epoch, first.seq >= seq {
            if current[channel] == nil { insert(channel, list) }
            return
        }
        var high = seq
        if let i = list.firstIndex(where: { $0.epoch == epoch }) {
            high = max(high, list[i].seq)
            list.remove(at: i)
        }
        list.insert(Mark(epoch: epoch, seq: high), at: 0)
        if list.count > epochsPerChannel { list.removeLast(list.count - epochsPerChannel) }
        insert(channel, list)
    }

    private mutating func insert(_ channel: String, _ marks: [Mark]) {
        if current[channel] == nil && current.count >= capacity / 2 {
            previous = current
            current = [:]
            current.reserveCapacity(capacity / 2)
        }
        current[channel] = marks
    }

    public var count: Int { current.count + previous.filter { current[$0.key] == nil }.count }
}
