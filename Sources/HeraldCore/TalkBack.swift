/// Clients talking back through RabbitMQ (PROTOCOL.md, "Client publish" and "RPC"): the ops,
/// the rules that allow them, what the node's talk-back worker is asked to do, and the frames
/// that answer.

/// Who may publish to a channel from a WebSocket (`client-publish` of a namespace, or
/// `--client-publish` for channels no namespace sets it for).
public enum ClientPublishRule: String, Equatable, Sendable, CaseIterable {
    /// Nobody (the default).
    case off = "false"
    /// Connections subscribed to the channel.
    case subscribers
    /// Connections whose token's `publish` claim names the channel.
    case token
    /// Connections that may read the channel; the message goes to `<exchange>.inbound` for the
    /// application's worker to check and publish, not straight to the channel.
    case backend
}

/// `{"op": "publish", "channel": C, "data": ..., "id": "m1"}`.
public struct ClientPublishOp: Equatable, Sendable {
    public var channel: String
    /// `data`, as compact JSON.
    public var data: [UInt8]
    public var id: String
}

/// `{"op": "rpc", "id": "r1", "method": "cart.add", "data": ..., "timeout": 2000}`.
public struct ClientRPCOp: Equatable, Sendable {
    public var id: String
    public var method: String
    /// `data` as compact JSON (`null` when absent).
    public var data: [UInt8]
    /// The op's `timeout` in ms, if it gave one (it may only lower `--rpc-timeout`).
    public var timeoutMillis: UInt64?
}

/// What a connection asks its node to send to RabbitMQ.
public enum TalkBackRequest: Equatable, Sendable {
    case publish(ClientPublishRequest)
    case rpc(ClientRPCRequest)
}

extension TalkBackRequest {
    /// The request with the sender's client id filled in.
    func from(_ client: String) -> TalkBackRequest {
        switch self {
        case var .publish(p):
            p.sender.client = client
            return .publish(p)
        case var .rpc(r):
            r.sender.client = client
            return .rpc(r)
        }
    }
}

/// Who asked: the connection's user (nil: anonymous) and its client id (lifecycle's `client`).
public struct TalkBackSender: Equatable, Sendable {
    public var user: String?
    public var client: String
    public init(user: String?, client: String) {
        self.user = user
        self.client = client
    }
}

public struct ClientPublishRequest: Equatable, Sendable {
    /// The client's id for this publish, echoed in the answer.
    public var id: String
    public var channel: String
    public var data: [UInt8]
    /// The AMQP `message_id`: derived from the user and the client's id, so a publish sent again
    /// (after a reconnect) is stored once.
    public var messageID: String
    /// To `<exchange>.inbound` (`backend`), not to the channel.
    public var backend: Bool
    public var sender: TalkBackSender
}

public struct ClientRPCRequest: Equatable, Sendable {
    public var id: String
    public var method: String
    public var data: [UInt8]
    public var timeoutMillis: UInt64
    /// The connection's token claims as compact JSON (`{}` for an anonymous connection).
    public var claims: [UInt8]
    public var sender: TalkBackSender
}

/// The codes of `rpc_error` (PROTOCOL.md, "RPC").
public enum RPCErrorCode: String, Sendable, CaseIterable {
    /// No worker's queue is bound to the method (RabbitMQ returned the call at once).
    case noRoute = "no_route"
    case timeout
    /// The method is not in `--rpc-methods` nor in the token's `rpc` claim.
    case forbidden
    /// The worker answered with the `herald-error` header.
    case workerError = "worker_error"
    /// RabbitMQ is unreachable or refused the call.
    case unavailable
    /// Too many calls of this connection in flight (`--rpc-max-in-flight`).
    case rateLimited = "rate_limited"
    /// `data` is larger than `--max-message-bytes`.
    case tooLarge = "too_large"
}

/// What the talk-back worker answers a connection.
public enum TalkBackAnswer: Equatable, Sendable {
    /// RabbitMQ confirmed the publish.
    case published(id: String, channel: String, messageID: String)
    /// The publish was not taken: `unavailable` (RabbitMQ down, blocked, refused, or nothing
    /// bound to `<exchange>.inbound`).
    case publishFailed(id: String, channel: String, code: ClientError.Code, message: String)
    case rpcResult(id: String, data: [UInt8])
    case rpcError(id: String, code: RPCErrorCode, message: String)

    public var isRPC: Bool {
        switch self {
        case .rpcResult, .rpcError: true
        case .published, .publishFailed: false
        }
    }

    public var frame: [UInt8] {
        switch self {
        case let .published(id, channel, messageID):
            var out = Array(#"{"type":"published","id":"#.utf8)
            JSON.appendString(id.utf8, to: &out)
            out += Array(#","channel":"#.utf8)
            JSON.appendString(channel.utf8, to: &out)
            out += Array(#","message_id":"#.utf8)
            JSON.appendString(messageID.utf8, to: &out)
            out.append(UInt8(ascii: "}"))
            return out
        case let .publishFailed(id, channel, code, message):
            return ClientError(code, message, op: "publish", channel: channel, id: id).frame
        case let .rpcResult(id, data):
            var out = Array(#"{"type":"rpc_result","id":"#.utf8)
            JSON.appendString(id.utf8, to: &out)
            out += Array(#","data":"#.utf8)
            out += data
            out.append(UInt8(ascii: "}"))
            return out
        case let .rpcError(id, code, message):
            var out = Array(#"{"type":"rpc_error","id":"#.utf8)
            JSON.appendString(id.utf8, to: &out)
            out += Array(#","code":"#.utf8)
            JSON.appendString(code.rawValue.utf8, to: &out)
            out += Array(#","message":"#.utf8)
            JSON.appendString(message.utf8, to: &out)
            out.append(UInt8(ascii: "}"))
            return out
        }
    }
}

extension TokenClaims {
    /// Reads the `publish` and `rpc` lists of a token's payload or a connect proxy's answer
    /// (absent: none); nil when they are valid, else why not.
    mutating func readTalkBack(from object: JSONValue, source: String) -> String? {
        for (name, problem) in [("publish", ChannelPattern.problem), ("rpc", TalkBack.methodPatternProblem)] as [(String, (String) -> String?)] {
            guard let list = object[name], list != .null else { continue }
            guard case let .array(items) = list else { return "\(name) must be a list of strings" }
            var patterns: [String] = []
            for item in items {
                guard let s = item.stringValue, problem(s) == nil else { return "bad pattern in \(source)'s \(name)" }
                patterns.append(s)
            }
            if name == "publish" { publish = patterns } else { rpc = patterns }
        }
        return nil
    }
}

public enum TalkBack {
    /// The longest client id of a publish or call.
    public static let maxIDBytes = 128
    /// The longest RPC method name (an AMQP routing key may hold 255 bytes).
    public static let maxMethodBytes = 255

    /// The `message_id` of a client publish: `client:<user>:<id>` (`client::<id>` for an
    /// anonymous connection, whose ids must then be unique by themselves).
    public static func messageID(user: String?, id: String) -> String {
        "client:\(user ?? ""):\(id)"
    }

    /// Why `method` cannot be an RPC method name, or nil: 1 to 255 bytes of letters, digits and
    /// `. _ - :` (a topic routing key without wildcards).
    public static func methodProblem(_ method: String) -> String? {
        if method.isEmpty || method.utf8.count > maxMethodBytes { return "\"method\" must be 1 to \(maxMethodBytes) bytes" }
        for c in method.utf8 {
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: ":"):
                continue
            default:
                return "\"method\" may hold only letters, digits and . _ - :"
            }
        }
        return nil
    }

    /// Why a method pattern (`cart.*`, `cart.add`, `*`) cannot be used, or nil.
    public static func methodPatternProblem(_ pattern: String) -> String? {
        if pattern == "*" { return nil }
        let name = pattern.hasSuffix("*") ? String(pattern.dropLast()) : pattern
        if name.contains("*") { return "\"*\" may only end a pattern" }
        return methodProblem(name)
    }

    /// The claims a worker is shown in the `herald-claims` header: `{}` when anonymous.
    public static func claimsJSON(_ claims: TokenClaims?) -> [UInt8] {
        guard let claims else { return Array("{}".utf8) }
        var out = Array(#"{"sub":"#.utf8)
        JSON.appendString(claims.sub.utf8, to: &out)
        out += Array(",\"exp\":\(claims.exp),\"channels\":".utf8)
        appendList(claims.channels, to: &out)
        out += Array(#","publish":"#.utf8)
        appendList(claims.publish, to: &out)
        out += Array(#","rpc":"#.utf8)
        appendList(claims.rpc, to: &out)
        if let info = claims.info { out += Array(#","info":"#.utf8) + info }
        out.append(UInt8(ascii: "}"))
        return out
    }

    static func appendList(_ items: [String], to out: inout [UInt8]) {
        out.append(UInt8(ascii: "["))
        for (i, item) in items.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            JSON.appendString(item.utf8, to: &out)
        }
        out.append(UInt8(ascii: "]"))
    }

    /// A client id field: a non-empty string of at most `maxIDBytes`.
    static func id(_ value: JSONValue) -> String? {
        guard let s = value["id"]?.stringValue, !s.isEmpty, s.utf8.count <= maxIDBytes else { return nil }
        return s
    }

    static func parsePublish(_ value: JSONValue) -> Result<ClientOp, ClientError> {
        let rawID = value["id"]?.stringValue.map { String($0.prefix(maxIDBytes)) }
        guard let channel = value["channel"]?.stringValue else {
            return .failure(ClientError(.badRequest, "\"channel\" must be a string", op: "publish", id: rawID))
        }
        if let problem = ChannelName.problem(channel) {
            return .failure(ClientError(.badChannel, problem, op: "publish", channel: channel, id: rawID))
        }
        guard let id = id(value) else {
            return .failure(ClientError(.badRequest, "\"id\" must be a non-empty string of at most \(maxIDBytes) bytes", op: "publish", channel: channel))
        }
        guard let data = value["data"] else {
            return .failure(ClientError(.badRequest, "\"data\" is missing", op: "publish", channel: channel, id: id))
        }
        var bytes: [UInt8] = []
        JSON.encode(data, to: &bytes)
        return .success(.publish(ClientPublishOp(channel: channel, data: bytes, id: id)))
    }

    static func parseRPC(_ value: JSONValue) -> Result<ClientOp, ClientError> {
        guard let id = id(value) else {
            return .failure(ClientError(.badRequest, "\"id\" must be a non-empty string of at most \(maxIDBytes) bytes", op: "rpc"))
        }
        guard let method = value["method"]?.stringValue else {
            return .failure(ClientError(.badRequest, "\"method\" must be a string", op: "rpc", id: id))
        }
        if let problem = methodProblem(method) { return .failure(ClientError(.badRequest, problem, op: "rpc", id: id)) }
        var timeout: UInt64?
        if let t = value["timeout"], t != .null {
            guard let ms = t.unsignedValue, ms >= 1 else {
                return .failure(ClientError(.badRequest, "\"timeout\" must be a positive number of milliseconds", op: "rpc", id: id))
            }
            timeout = ms
        }
        var bytes: [UInt8] = []
        JSON.encode(value["data"] ?? .null, to: &bytes)
        return .success(.rpc(ClientRPCOp(id: id, method: method, data: bytes, timeoutMillis: timeout)))
    }
}
