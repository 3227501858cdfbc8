/// The subscriptions asked for in a WebSocket URL: `/ws?channel=a&channel=b`,
/// or `/ws?channel=a&since=41&epoch=e1` (PROTOCOL.md, "Subscribing" and "Details").
public struct ConnectRequest: Equatable, Sendable {
    public var subscriptions: [(channel: String, resume: ResumePosition?)] = []
    public var errors: [ClientError] = []
    /// `?token=` (a connection token; checked before any subscription).
    public var token: String?
    /// `?presence=true`: every channel of the URL is subscribed as with `"presence": true`.
    public var presence = false
    /// Where each channel resumes from, for a Server-Sent Events stream's ids.
    public var resumePositions: [(channel: String, position: ResumePosition)] {
        subscriptions.compactMap { s in s.resume.map { (s.channel, $0) } }
    }

    public static func == (a: ConnectRequest, b: ConnectRequest) -> Bool {
        a.errors == b.errors && a.presence == b.presence && a.subscriptions.count == b.subscriptions.count
            && zip(a.subscriptions, b.subscriptions).allSatisfy { $0.channel == $1.channel && $0.resume == $1.resume }
    }

    /// Parses a raw query string (`a=1&b=2`, percent-encoded).
    public static func parse(query: String) -> ConnectRequest {
        var pairs: [(String, String)] = []
        for part in query.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = percentDecode(String(kv[0]))
            let value = kv.count > 1 ? percentDecode(String(kv[1])) : ""
            pairs.append((key, value))
        }
        return parse(pairs: pairs)
    }

    public static func parse(pairs: [(String, String)]) -> ConnectRequest {
        var request = ConnectRequest()
        var channels: [String] = []
        var since: String?
        var epoch: String?
        var lastEventID: [String: ResumePosition] = [:]
        for (key, value) in pairs {
            switch key {
            case "channel": channels.append(value)
            case "since": since = value
            case "epoch": epoch = value
            case "token": request.token = value
            case "presence": request.presence = value == "true" || value == "1"
            case "last-event-id", "last_event_id": lastEventID.merge(EventStreamID.parse(value)) { a, _ in a }
            default: break
            }
        }
        if since != nil || epoch != nil, lastEventID.isEmpty {
            if channels.count > 1 {
                request.errors.append(ClientError(.badRequest,
                    "since/epoch in the URL need exactly one channel; none of the \(channels.count) channels was subscribed"))
                return request
            }
        }
        var resume: ResumePosition?
        if let since {
            guard let value = UInt64(since) else {
                request.errors.append(ClientError(.badRequest, "since must be a non-negative integer",
                                                  channel: channels.first))
                return request
            }
            resume = ResumePosition(since: value, epoch: epoch)
        }
        for channel in channels {
            if let problem = ChannelName.problem(channel) {
                request.errors.append(ClientError(.badChannel, problem, channel: channel))
            } else if !request.subscriptions.contains(where: { $0.channel == channel }) {
                // A stream's Last-Event-ID (header, or `last_event_id` for a client that kept
                // it) names each channel's own position, and wins over since: a channel it does
                // not name had no message since the URL's position.
                request.subscriptions.append((channel, lastEventID[channel] ?? resume))
            }
        }
        return request
    }

    public static func percentDecode(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else { return s }
        var out = [UInt8]()
        let bytes = Array(s.utf8)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "%"), i + 2 < bytes.count, let h = hex(bytes[i + 1]), let l = hex(bytes[i + 2]) {
                out.append(h << 4 | l)
                i += 3
            } else if b == UInt8(ascii: "+") {
                out.append(0x20)
                i += 1
            } else {
                out.append(b)
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }
}
