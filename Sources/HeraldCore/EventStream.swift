/// Server-Sent Events (`GET /sse`): the same frames as the WebSocket, each one an SSE event named
/// after its `type`, and every `message` event with an `id:` that holds the position of every
/// channel of the stream. A browser's `EventSource` sends that id back as `Last-Event-ID` when it
/// reconnects, and each channel resumes from its own position (PROTOCOL.md, "Server-Sent Events").

/// The `id:` of a message event: `channel:seq@epoch`, one per channel, comma-separated
/// (`room:1:44@e1,news:7@e2`). Channel names may hold `:` and `@` but not `,`; an epoch holds
/// neither `@` nor `,`, and a seq only digits, so each item is read from its end.
public enum EventStreamID {
    public static func encode(_ positions: [(channel: String, seq: UInt64, epoch: String)]) -> String {
        positions.map { "\($0.channel):\($0.seq)@\($0.epoch)" }.joined(separator: ",")
    }

    /// The positions in an id; items that are not `channel:seq@epoch` with a valid channel name
    /// are skipped (a client cannot make the server crash or resume where it should not).
    public static func parse(_ text: String) -> [String: ResumePosition] {
        var out: [String: ResumePosition] = [:]
        for item in text.split(separator: ",", omittingEmptySubsequences: true).prefix(1_000) {
            guard let at = item.lastIndex(of: "@"), let colon = item[..<at].lastIndex(of: ":") else { continue }
            let channel = String(item[..<colon]), epoch = String(item[item.index(after: at)...])
            guard let seq = UInt64(item[item.index(after: colon)..<at]), ChannelName.isValid(channel),
                  !epoch.isEmpty, epoch.utf8.count <= 64, epoch.utf8.allSatisfy(ChannelName.isAllowed) else { continue }
            out[channel] = ResumePosition(since: seq, epoch: epoch)
        }
        return out
    }
}

/// Turns one stream's frames into SSE bytes, keeping each channel's position for the ids.
///
/// - Important: one per stream; not thread-safe.
public struct EventStreamEncoder: Sendable {
    /// Channel → (seq, epoch) of the last message sent, or of the resume position it came with.
    private var positions: [String: (seq: UInt64, epoch: String)] = [:]
    /// The channels in the order they first got a position (so ids are stable).
    private var order: [String] = []
    private var epochs: [String: String] = [:]

    /// - Parameter resume: the positions the stream resumes from (its `Last-Event-ID`), kept in
    ///   every id until the channel's own messages move them, so a stream that ends before a
    ///   channel had a message still resumes that channel where it was.
    public init(resume: [(channel: String, position: ResumePosition)] = []) {
        for (channel, position) in resume {
            guard let epoch = position.epoch else { continue }
            set(channel, seq: position.since, epoch: epoch)
        }
    }

    /// The first bytes of a stream: how long a browser waits before it reconnects.
    public static func preamble(retryMillis: Int) -> [UInt8] { Array("retry: \(retryMillis)\n\n".utf8) }

    /// A comment line that keeps proxies from closing a quiet stream.
    public static let heartbeat = Array(":\n\n".utf8)

    /// The last event of a stream the server ends: `event: close` with the code and reason a
    /// WebSocket would have been closed with (4002: token expired, 4008: resume, 1001: going away).
    public static func close(code: UInt16, reason: String) -> [UInt8] {
        Array("event: close\ndata: {\"type\":\"close\",\"code\":\(code),\"reason\":\(JSON.quoted(reason))}\n\n".utf8)
    }

    public var id: String { EventStreamID.encode(order.map { ($0, positions[$0]!.seq, positions[$0]!.epoch) }) }

    /// Appends one SSE event per frame: `event: <type>`, for a message an `id:` with every
    /// channel's position after it, then `data: <frame>`.
    public mutating func encode(_ frames: [[UInt8]], into out: inout [UInt8]) {
        for frame in frames {
            guard let type = Self.string(after: Self.typeKey, in: frame, from: 0) else { continue }
            out.append(contentsOf: Self.eventPrefix)
            out.append(contentsOf: type.utf8)
            out.append(0x0A)
            switch type {
            case "message":
                if let channel = Self.string(after: Self.channelKey, in: frame, from: 0), let epoch = epochs[channel],
                   let seq = JSON.unsignedAfter(Self.seqKey, in: frame, range: 0..<frame.count) {
                    set(channel, seq: seq, epoch: epoch)
                    out.append(contentsOf: Self.idPrefix)
                    out.append(contentsOf: id.utf8)
                    out.append(0x0A)
                }
            case "subscribed":
                if let channel = Self.string(after: Self.channelKey, in: frame, from: 0),
                   let epoch = Self.string(after: Self.epochKey, in: frame, from: 0) {
                    // A position in another epoch says nothing about this one.
                    if let old = positions[channel], old.epoch != epoch { forget(channel) }
                    epochs[channel] = epoch
                }
            case "unsubscribed":
                if let channel = Self.string(after: Self.channelKey, in: frame, from: 0) { forget(channel) }
            default:
                break
            }
            out.append(contentsOf: Self.dataPrefix)
            out.append(contentsOf: frame)
            out.append(contentsOf: [0x0A, 0x0A])
        }
    }

    private mutating func set(_ channel: String, seq: UInt64, epoch: String) {
        if positions[channel] == nil { order.append(channel) }
        positions[channel] = (seq, epoch)
    }

    private mutating func forget(_ channel: String) {
        if positions.removeValue(forKey: channel) != nil { order.removeAll { $0 == channel } }
    }

    private static let typeKey = Array(#""type":""#.utf8)
    private static let channelKey = Array(#""channel":""#.utf8)
    private static let epochKey = Array(#""epoch":""#.utf8)
    private static let seqKey = Array(#""seq":"#.utf8)
    private static let eventPrefix = Array("event: ".utf8)
    private static let idPrefix = Array("id: ".utf8)
    private static let dataPrefix = Array("data: ".utf8)

    /// The string after `key` (which ends with its opening quote), up to the closing quote: the
    /// frames' types, channel names and epochs have no escapes.
    private static func string(after key: [UInt8], in frame: [UInt8], from: Int) -> String? {
        guard let at = JSON.find(key, in: frame, range: from..<frame.count) else { return nil }
        let start = at + key.count
        guard let end = frame[start...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        return String(decoding: frame[start..<end], as: UTF8.self)
    }
}
