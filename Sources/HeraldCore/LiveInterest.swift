/// Which channels' live topics a node subscribes to in Redis PUB/SUB, and for which of its
/// service threads, decided without I/O.
///
/// A service thread that subscribes a client to a channel *watches* it with a request; the
/// request's history read is released only once Redis has confirmed the node's subscription to
/// the channel's topic, so every message stored after the read reaches the node live: history
/// then live, no gap. A channel no thread watches any more is unsubscribed after `lingerMillis`
/// (a client that reconnects at once finds it still subscribed). When the PUB/SUB connection
/// is lost, every watched channel is subscribed again on the next one, and once each is
/// confirmed it is *caught up*: compared with Redis and repaired, since PUB/SUB kept nothing
/// for the node meanwhile.
///
/// - Important: not thread-safe; owned by the live thread.
public struct LiveInterest {
    /// What the live thread does next.
    public struct Step: Equatable {
        /// SUBSCRIBE these channels' topics.
        public var subscribe: [String] = []
        /// UNSUBSCRIBE these channels' topics (forget what was seen of them).
        public var unsubscribe: [String] = []
        /// Read history for these subscribe requests now (their channel's topic is confirmed).
        public var read: [Read] = []
        /// Compare these channels with Redis and repair what the lost connection missed.
        public var catchUp: [String] = []

        public init() {}
        public var isEmpty: Bool { subscribe.isEmpty && unsubscribe.isEmpty && read.isEmpty && catchUp.isEmpty }
    }

    public struct Read: Equatable {
        public let channel: String
        public let request: UInt64
        public let hub: Int
        public init(channel: String, request: UInt64, hub: Int) {
            self.channel = channel
            self.request = request
            self.hub = hub
        }
    }

    private struct Topic {
        var hubs: Set<Int> = []
        var confirmed = false
        /// SUBSCRIBE commands sent whose confirmation has not come yet.
        var outstanding = 0
        var waiting: [Read] = []
        /// Subscribed again after a lost connection: caught up once confirmed.
        var recovering = false
        /// Monotonic ms since no thread watches it.
        var idleSince: UInt64?
    }

    public let lingerMillis: UInt64
    private var topics: [String: Topic] = [:]
    private var linkUp = false

    public init(lingerMillis: UInt64) { self.lingerMillis = lingerMillis }

    /// The channels whose topics are subscribed or being subscribed.
    public var count: Int { topics.count }

    /// The service threads to hand a channel's live messages to (none while it is not watched).
    public func hubs(of channel: String) -> Set<Int> { topics[channel]?.hubs ?? [] }

    /// Whether the channel's topic is confirmed (its live messages reach this node).
    public func isConfirmed(_ channel: String) -> Bool { topics[channel]?.confirmed ?? false }

    /// Service thread `hub` subscribes a client to `channel` (request `request`).
    public mutating func watch(_ channel: String, hub: Int, request: UInt64) -> Step {
        var step = Step()
        var topic = topics[channel] ?? Topic()
        topic.hubs.insert(hub)
        topic.idleSince = nil
        let read = Read(channel: channel, request: request, hub: hub)
        if topic.confirmed {
            step.read.append(read)
        } else {
            topic.waiting.append(read)
            if topic.outstanding == 0 && linkUp {
                topic.outstanding = 1
                step.subscribe.append(channel)
            }
        }
        topics[channel] = topic
        return step
    }

    /// Service thread `hub` has no subscriber of `channel` left.
    public mutating func unwatch(_ channel: String, hub: Int, nowMillis: UInt64) {
        guard var topic = topics[channel] else { return }
        topic.hubs.remove(hub)
        if topic.hubs.isEmpty { topic.idleSince = nowMillis }
        topics[channel] = topic
    }

    /// Redis confirmed a SUBSCRIBE of `channel`'s topic.
    public mutating func confirmed(_ channel: String) -> Step {
        var step = Step()
        guard var topic = topics[channel], topic.outstanding > 0 else { return step }
        topic.outstanding -= 1
        if topic.outstanding == 0 {
            topic.confirmed = true
            step.read = topic.waiting
            topic.waiting = []
            if topic.recovering {
                topic.recovering = false
                step.catchUp.append(channel)
            }
        }
        topics[channel] = topic
        return step
    }

    /// The PUB/SUB connection is gone: nothing is confirmed any more. Channels no thread watches
    /// are forgotten (returned, sorted); the rest are subscribed again by `connected`.
    public mutating func disconnected() -> [String] {
        linkUp = false
        let forgotten = topics.filter { $0.value.hubs.isEmpty && $0.value.waiting.isEmpty }.keys.sorted()
        for channel in forgotten { topics[channel] = nil }
        for key in topics.keys {
            topics[key]!.confirmed = false
            topics[key]!.outstanding = 0
            topics[key]!.recovering = true
        }
        return forgotten
    }

    /// A PUB/SUB connection is up: every channel is subscribed (again).
    public mutating func connected() -> Step {
        linkUp = true
        var step = Step()
        for key in topics.keys.sorted() where topics[key]!.outstanding == 0 && !topics[key]!.confirmed {
            topics[key]!.outstanding = 1
            step.subscribe.append(key)
        }
        return step
    }

    /// Channels no thread has watched for `lingerMillis`: unsubscribed and forgotten.
    public mutating func expire(nowMillis: UInt64) -> Step {
        var step = Step()
        for (channel, topic) in topics where topic.hubs.isEmpty && topic.waiting.isEmpty && topic.outstanding == 0 {
            guard let idle = topic.idleSince, nowMillis >= idle + lingerMillis else { continue }
            step.unsubscribe.append(channel)
        }
        step.unsubscribe.sort()
        for channel in step.unsubscribe { topics[channel] = nil }
        return step
    }
}
