/// A sequenced message as it travels from the sequencer to every node.
public struct SequencedMessage: Equatable, Sendable {
    public let channel: String
    public let epoch: String
    public let seq: UInt64
    public let frame: [UInt8]
    /// `frame` as one independent permessage-deflate piece, made once by the node that received
    /// it (when any of its clients negotiated compression) and shared by all of them.
    public var piece: [UInt8]?

    public init(channel: String, epoch: String, seq: UInt64, frame: [UInt8]) {
        self.channel = channel
        self.epoch = epoch
        self.seq = seq
        self.frame = frame
    }
}

/// The body of one message on `<exchange>.live`: many sequenced messages, one per line,
/// `seq TAB epoch TAB channel TAB frame LF`. Frames are compact JSON (no raw newline),
/// channels and epochs have no tab, so the format needs no escaping.
public enum LiveBatch {
    public static func encode(_ messages: [SequencedMessage]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(messages.reduce(0) { $0 + $1.frame.count + $1.channel.utf8.count + 40 })
        for m in messages {
            out.append(contentsOf: String(m.seq).utf8)
            out.append(0x09)
            out.append(contentsOf: m.epoch.utf8)
            out.append(0x09)
            out.append(contentsOf: m.channel.utf8)
            out.append(0x09)
            out.append(contentsOf: m.frame)
            out.append(0x0A)
        }
        return out
    }

    /// Decodes a body; a malformed line is skipped (the node repairs the gap from Redis).
    public static func decode(_ body: [UInt8]) -> [SequencedMessage] {
        var result = [SequencedMessage]()
        for line in body.split(separator: 0x0A, omittingEmptySubsequences: true) {
            let fields = line.split(separator: 0x09, maxSplits: 3, omittingEmptySubsequences: false)
            guard fields.count == 4,
                  let seq = UInt64(String(decoding: fields[0], as: UTF8.self)) else { continue }
            result.append(SequencedMessage(channel: String(decoding: fields[2], as: UTF8.self),
                                           epoch: String(decoding: fields[1], as: UTF8.self),
                                           seq: seq, frame: Array(fields[3])))
        }
        return result
    }
}

/// Capped exponential backoff for reconnect loops: 100 ms, 200 ms, … up to `cap`.
/// Capped exponential backoff with jitter: attempt n waits between half and all of
/// `min(cap, initial · 2ⁿ)`, so nodes that lost a dependency together do not all retry at
/// the same instant. The caller draws the jitter (HeraldCore draws no random numbers).
public struct Backoff: Sendable {
    public let initialMillis: Int
    public let capMillis: Int
    public private(set) var attempt = 0

    public init(initialMillis: Int = 100, capMillis: Int = 5_000) {
        self.initialMillis = initialMillis
        self.capMillis = capMillis
    }

    /// The next wait in ms; `jitter` in [0, 1) picks where in the upper half of the ceiling it falls.
    public mutating func next(jitter: Double = 1) -> Int {
        let shift = Swift.min(attempt, 20)
        attempt += 1
        let ceiling = Swift.min(capMillis, initialMillis << shift)
        return ceiling / 2 + Int(Double(ceiling - ceiling / 2) * Swift.min(Swift.max(jitter, 0), 1))
    }

    public mutating func reset() { attempt = 0 }
}
