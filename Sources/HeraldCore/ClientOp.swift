/// A client's position in a channel: resume after `since`, in `epoch` (nil: the current one).
public struct ResumePosition: Equatable, Sendable {
    public var since: UInt64
    public var epoch: String?
    public init(since: UInt64, epoch: String?) {
        self.since = since
        self.epoch = epoch
    }
}

/// One operation a WebSocket client asked for.
public enum ClientOp: Equatable, Sendable {
    case subscribe(channel: String, resume: ResumePosition?)
    case unsubscribe(channel: String)
    /// `"presence": true` on a subscribe: also receive the channel's member list and its changes,
    /// resuming them after `presence_since`/`presence_epoch` when given.
    case subscribeWithPresence(channel: String, resume: ResumePosition?, presenceResume: ResumePosition?)
    /// `{"op": "presence", "channel": ...}`: the whole member list again.
    case presence(channel: String)
    /// `{"op": "auth", "token": "..."}`: present a connection token after connecting.
    case auth(token: String)
    /// A subscribe carrying a subscription token (`"token"`), for namespaces with `subscribe-token`.
    case subscribeWithToken(TokenSubscribe)
    /// `{"op": "refresh", "channel": ..., "token": ...}`: a fresh subscription token before the old one expires.
    case refresh(channel: String, token: String)
    /// `{"op": "publish", ...}`: a message for a channel, through RabbitMQ.
    case publish(ClientPublishOp)
    /// `{"op": "rpc", ...}`: a call answered by an AMQP worker.
    case rpc(ClientRPCOp)
}

/// A subscribe op with its subscription token.
public struct TokenSubscribe: Equatable, Sendable {
    public var channel: String
    public var resume: ResumePosition?
    public var presence: Bool
    public var presenceResume: ResumePosition?
    public var token: String
}

/// An error frame to send back; the connection stays open (PROTOCOL.md, "What the server sends" 4).
public struct ClientError: Error, Equatable, Sendable {
    public enum Code: String, Sendable {
        case badRequest = "bad_request", unknownOp = "unknown_op", badChannel = "bad_channel"
        /// The connection's token (or anonymous access) does not cover this channel.
        case forbidden
        /// `presence` asked for on a channel that has none (not in `--presence-channels`), or
        /// `{"op":"presence"}` on a channel not subscribed with presence.
        case presenceUnavailable = "presence_unavailable"
        /// A per-connection limit: subscriptions, or client frames per second.
        case tooManySubscriptions = "too_many_subscriptions", rateLimited = "rate_limited"
        /// The channel's namespace has `subscribe-token: required` and the subscribe had no `"token"`.
        case subscriptionTokenRequired = "subscription_token_required"
        /// A subscription token that was refused (the message names why: expired, another user's...).
        case badSubscriptionToken = "bad_subscription_token"
        /// The namespace's subscribe proxy could not be asked (down, slow, a bad answer): retry.
        case subscribeProxyUnavailable = "subscribe_proxy_unavailable"
        /// A client publish whose `data` is larger than `--max-message-bytes`.
        case tooLarge = "too_large"
        /// A client publish RabbitMQ did not take (down, blocked, refused it): retry with the same id.
        case unavailable
    }
    public let code: Code
    public let message: String
    public let op: String?
    public let channel: String?
    /// The client's id of the publish or call the error answers.
    public let id: String?

    public init(_ code: Code, _ message: String, op: String? = nil, channel: String? = nil, id: String? = nil) {
        self.code = code
        self.message = message
        self.op = op
        self.channel = channel
        self.id = id
    }

    public var frame: [UInt8] { ServerFrame.error(self) }
}

public enum ClientOpParser {
    /// A resume position from two fields (`since`/`epoch`, or the presence pair); nil when absent.
    static func position(_ value: JSONValue, since sinceKey: String, epoch epochKey: String, op: String,
                         channel: String) -> Result<ResumePosition?, ClientError> {
        guard let sinceValue = value[sinceKey], sinceValue != .null else { return .success(nil) }
        guard let since = sinceValue.unsignedValue else {
            return .failure(ClientError(.badRequest, "\"\(sinceKey)\" must be a non-negative integer", op: op, channel: channel))
        }
        var epoch: String?
        if let e = value[epochKey], e != .null {
            guard let s = e.stringValue, s.utf8.count <= 128 else {
                return .failure(ClientError(.badRequest, "\"\(epochKey)\" must be a string of at most 128 bytes", op: op, channel: channel))
            }
            epoch = s
        }
        return .success(ResumePosition(since: since, epoch: epoch))
    }

    /// Parses one client text frame. Malformed JSON is an error without `op`.
    public static func parse(_ bytes: [UInt8]) -> Result<ClientOp, ClientError> {
        let value: JSONValue
        do {
            value = try JSON.parse(bytes)
        } catch {
            return .failure(ClientError(.badRequest, "malformed JSON: \(error.message) at byte \(error.offset)"))
        }
        guard case .object = value else {
            return .failure(ClientError(.badRequest, "a client frame must be one JSON object"))
        }
        guard let opValue = value["op"] else {
            return .failure(ClientError(.badRequest, "missing \"op\""))
        }
        guard let op = opValue.stringValue else {
            return .failure(ClientError(.badRequest, "\"op\" must be a string"))
        }
        switch op {
        case "publish": return TalkBack.parsePublish(value)
        case "rpc": return TalkBack.parseRPC(value)
        case "auth":
            guard let token = value["token"]?.stringValue, !token.isEmpty, token.utf8.count <= 4096 else {
                return .failure(ClientError(.badRequest, "\"token\" must be a non-empty string of at most 4096 bytes", op: op))
            }
            return .success(.auth(token: token))
        case "refresh":
            guard let channel = value["channel"]?.stringValue, ChannelName.problem(channel) == nil else {
                return .failure(ClientError(.badChannel, "\"channel\" must be a valid channel name", op: op))
            }
            guard let token = value["token"]?.stringValue, !token.isEmpty, token.utf8.count <= 4096 else {
                return .failure(ClientError(.badRequest, "\"token\" must be a non-empty string of at most 4096 bytes", op: op, channel: channel))
            }
            return .success(.refresh(channel: channel, token: token))
        case "subscribe", "unsubscribe", "presence":
            guard let channel = value["channel"]?.stringValue else {
                return .failure(ClientError(.badRequest, "\"channel\" must be a string", op: op))
            }
            if let problem = ChannelName.problem(channel) {
                return .failure(ClientError(.badChannel, problem, op: op, channel: channel))
            }
            if op == "unsubscribe" { return .success(.unsubscribe(channel: channel)) }
            if op == "presence" { return .success(.presence(channel: channel)) }
            let resume: ResumePosition?
            switch position(value, since: "since", epoch: "epoch", op: op, channel: channel) {
            case let .success(r): resume = r
            case let .failure(e): return .failure(e)
            }
            if let t = value["token"], t != .null {
                guard let token = t.stringValue, !token.isEmpty, token.utf8.count <= 4096 else {
                    return .failure(ClientError(.badRequest, "\"token\" must be a non-empty string of at most 4096 bytes", op: op, channel: channel))
                }
                var presenceResume: ResumePosition?
                let presence: Bool
                switch value["presence"] {
                case nil, .null?, .bool(false)?: presence = false
                case .bool(true)?:
                    presence = true
                    switch position(value, since: "presence_since", epoch: "presence_epoch", op: op, channel: channel) {
                    case let .success(p): presenceResume = p
                    case let .failure(e): return .failure(e)
                    }
                default:
                    return .failure(ClientError(.badRequest, "\"presence\" must be true or false", op: op, channel: channel))
                }
                return .success(.subscribeWithToken(TokenSubscribe(channel: channel, resume: resume, presence: presence,
                                                                   presenceResume: presenceResume, token: token)))
            }
            switch value["presence"] {
            case nil, .null?, .bool(false)?:
                return .success(.subscribe(channel: channel, resume: resume))
            case .bool(true)?:
                switch position(value, since: "presence_since", epoch: "presence_epoch", op: op, channel: channel) {
                case let .success(p): return .success(.subscribeWithPresence(channel: channel, resume: resume, presenceResume: p))
                case let .failure(e): return .failure(e)
                }
            default:
                return .failure(ClientError(.badRequest, "\"presence\" must be true or false", op: op, channel: channel))
            }
        default:
            return .failure(ClientError(.unknownOp, "unknown op \(JSON.quoted(String(op.prefix(64))))", op: op))
        }
    }
}

/// Control frames the server sends (compact JSON, no raw newline).
public enum ServerFrame {
    public static func error(_ e: ClientError) -> [UInt8] {
        var out = Array(#"{"type":"error","code":"#.utf8)
        JSON.appendString(e.code.rawValue.utf8, to: &out)
        out.append(contentsOf: #","message":"#.utf8)
        JSON.appendString(e.message.utf8, to: &out)
        if let op = e.op {
            out.append(contentsOf: #","op":"#.utf8)
            JSON.appendString(op.utf8, to: &out)
        }
        if let channel = e.channel {
            out.append(contentsOf: #","channel":"#.utf8)
            JSON.appendString(channel.utf8, to: &out)
        }
        if let id = e.id {
            out.append(contentsOf: #","id":"#.utf8)
            JSON.appendString(id.utf8, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    public static func refreshed(channel: String, exp: UInt64) -> [UInt8] {
        var out = Array(#"{"type":"refreshed","channel":"#.utf8)
        JSON.appendString(channel.utf8, to: &out)
        out += Array(",\"exp\":\(exp)}".utf8)
        return out
    }

    public static func authenticated(sub: String, exp: UInt64) -> [UInt8] {
        var out = Array(#"{"type":"authenticated","sub":"#.utf8)
        JSON.appendString(sub.utf8, to: &out)
        out += Array(",\"exp\":\(exp)}".utf8)
        return out
    }

    /// `reason` is absent when the client asked; `server` when the server API ended it.
    public static func unsubscribed(channel: String, reason: String? = nil) -> [UInt8] {
        var out = Array(#"{"type":"unsubscribed","channel":"#.utf8)
        JSON.appendString(channel.utf8, to: &out)
        if let reason {
            out.append(contentsOf: #","reason":"#.utf8)
            JSON.appendString(reason.utf8, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// `recovered`/`missed`: absent without `since`; `missed` nil means JSON `null` (another epoch).
    public static func subscribed(channel: String, epoch: String, seq: UInt64, replay: Int,
                                  recovery: Recovery?) -> [UInt8] {
        var out = Array(#"{"type":"subscribed","channel":"#.utf8)
        JSON.appendString(channel.utf8, to: &out)
        out.append(contentsOf: #","epoch":"#.utf8)
        JSON.appendString(epoch.utf8, to: &out)
        out.append(contentsOf: ",\"seq\":\(seq),\"replay\":\(replay)".utf8)
        if let recovery {
            out.append(contentsOf: ",\"recovered\":\(recovery.recovered),\"missed\":".utf8)
            out.append(contentsOf: (recovery.missed.map { String($0) } ?? "null").utf8)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    public struct Recovery: Equatable, Sendable {
        public let recovered: Bool
        public let missed: UInt64?
    }
}
