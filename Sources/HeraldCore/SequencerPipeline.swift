/// The sequencer's rules between "delivered by RabbitMQ" and "acked", decided without I/O.
///
/// A batch is stored in Redis, then published (to `.live`, and refused messages to `.dead`),
/// then waits in flight for RabbitMQ's confirms. Batches are acked strictly in order, each only
/// once its own publishes and every earlier batch's are confirmed, so a delivery is acked only
/// after Redis stored it and every node was sent it. A store Redis refuses sends that channel's
/// messages to `.dead` with the reason; nothing is acked unstored and nothing is dropped.
///
/// - Important: not thread-safe; owned by the sequencer thread.
public struct SequencerPipeline {
    /// A batch published and waiting for its confirms.
    public struct Batch: Equatable, Sendable {
        /// The newest delivery of the batch: acked with `multiple`.
        public var lastDelivery: UInt64
        /// The batch's newest publish (live and dead-letter).
        public var lastPublish: UInt64
        public var deadLettered: Int
        public var publishedAtMillis: UInt64
        public init(lastDelivery: UInt64, lastPublish: UInt64, deadLettered: Int, publishedAtMillis: UInt64) {
            (self.lastDelivery, self.lastPublish, self.deadLettered, self.publishedAtMillis) = (lastDelivery, lastPublish, deadLettered, publishedAtMillis)
        }
    }

    public enum Action: Equatable, Sendable {
        /// Ack every delivery through `delivery` (multiple); `batches` batches and
        /// `deadLettered` dead letters are now settled.
        case ack(through: UInt64, batches: Int, deadLettered: Int)
        /// The oldest batch waited too long for its confirm: drop the connection (RabbitMQ
        /// delivers everything unacked again, and de-duplication keeps it stored once).
        case fail(String)
    }

    /// What happens to one channel's messages once Redis answered for them.
    public enum Stored: Equatable, Sendable {
        /// Stored, or known from an earlier store (`duplicates` of them): publish them to every node.
        case publish([SequencedMessage], duplicates: Int)
        /// Redis refused the store: dead-letter the channel's messages with this reason.
        case deadLetter(reason: String)
    }

    public let maxInFlight: Int
    public let confirmTimeoutMillis: UInt64
    public private(set) var inFlight: [Batch] = []

    public init(maxInFlight: Int = 4, confirmTimeoutMillis: UInt64 = 10_000) {
        (self.maxInFlight, self.confirmTimeoutMillis) = (maxInFlight, confirmTimeoutMillis)
    }

    /// No new batch may be published until the oldest is confirmed.
    public var isFull: Bool { inFlight.count >= maxInFlight }
    /// The publish whose confirm the oldest batch waits for.
    public var oldestPublish: UInt64? { inFlight.first?.lastPublish }

    public mutating func published(_ batch: Batch) { inFlight.append(batch) }

    /// RabbitMQ confirmed every publish through `settled`: the batches that are now safe, oldest
    /// first, acked with one multiple-ack; or a failure when the oldest waited too long.
    public mutating func settle(through settled: UInt64, nowMillis: UInt64) -> [Action] {
        var actions: [Action] = []
        var done = 0, deadLettered = 0
        while done < inFlight.count && inFlight[done].lastPublish <= settled {
            deadLettered += inFlight[done].deadLettered
            done += 1
        }
        if done > 0 {
            actions.append(.ack(through: inFlight[done - 1].lastDelivery, batches: done, deadLettered: deadLettered))
            inFlight.removeFirst(done)
        }
        if let oldest = inFlight.first, nowMillis >= oldest.publishedAtMillis, nowMillis - oldest.publishedAtMillis > confirmTimeoutMillis {
            actions.append(.fail("no publisher confirm within \(confirmTimeoutMillis) ms"))
        }
        return actions
    }

    /// The connection to RabbitMQ is gone: nothing in flight will be acked (RabbitMQ delivers it
    /// again).
    public mutating func connectionLost() { inFlight = [] }

    /// One channel's messages after Redis answered the `sequence` script: `sequenced` is the
    /// parsed answer (nil when Redis refused or answered something else), `frames(seq)` the
    /// frame of the i-th message as a new one.
    public static func stored(channel: String, sequenced: (epoch: String, messages: [(seq: UInt64, stored: [UInt8]?)])?,
                              reply: @autoclosure () -> String, newFrame: (Int, UInt64) -> [UInt8]) -> Stored {
        guard let sequenced else { return .deadLetter(reason: "Redis refused to store it: " + reply()) }
        var out: [SequencedMessage] = []
        var duplicates = 0
        out.reserveCapacity(sequenced.messages.count)
        for (i, m) in sequenced.messages.enumerated() {
            if m.stored != nil { duplicates += 1 }
            out.append(SequencedMessage(channel: channel, epoch: sequenced.epoch, seq: m.seq, frame: m.stored ?? newFrame(i, m.seq)))
        }
        return .publish(out, duplicates: duplicates)
    }
}
