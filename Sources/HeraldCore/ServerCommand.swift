/// The server API (PROTOCOL.md, "Server API"): commands a backend sends over HTTP
/// (`POST /api/<name>`) or as an AMQP message on `<exchange>.control` (routing key = name),
/// with the same JSON body either way. Parsed here without I/O.
public enum ServerCommand: Equatable, Sendable {
    /// Whose connections a command acts on: every connection of a user (the token's `sub`) on
    /// every node, or one connection by its client id (as lifecycle events and presence name it).
    public enum Target: Equatable, Sendable {
        case user(String)
        case client(String)
    }

    /// Close the target's connections: 4003 (do not reconnect) or, with `reconnect`, 4005.
    /// `revokeBefore`: tokens of the user issued before this second are refused until `revokeUntil`.
    case disconnect(Target, reconnect: Bool, reason: String, revokeBefore: UInt64?, revokeUntil: UInt64?)
    case unsubscribe(Target, channel: String)
    case subscribe(Target, channel: String)
    /// One message to many channels, each stored as a publish to it; idempotent by `id`.
    case broadcast(channels: [String], data: [UInt8], id: String?)

    /// The names, as routing keys and paths.
    public static let names = ["disconnect", "unsubscribe", "subscribe", "broadcast"]
    /// Close codes of `disconnect`.
    public static let closeNoReconnect: UInt16 = 4003
    public static let closeReconnect: UInt16 = 4005
    /// Most channels one broadcast may name.
    public static let maxBroadcastChannels = 1_000

    public var name: String {
        switch self {
        case .disconnect: "disconnect"
        case .unsubscribe: "unsubscribe"
        case .subscribe: "subscribe"
        case .broadcast: "broadcast"
        }
    }

    public struct Problem: Error, Equatable, CustomStringConvertible {
        public let code: String
        public let description: String
        init(_ code: String, _ description: String) {
            self.code = code
            self.description = description
        }
    }

    /// The command `name` with `body`. `nowSeconds` is when a revocation starts (tokens issued
    /// before it are refused) unless the body names `revoke_before`; `revokeSeconds` how long
    /// it lasts unless the body names `revoke_until`.
    public static func parse(name: String, body: [UInt8], nowSeconds: UInt64, revokeSeconds: UInt64) -> Result<ServerCommand, Problem> {
        guard names.contains(name) else {
            return .failure(Problem("unknown_command", "unknown command \(name); one of \(names.joined(separator: ", "))"))
        }
        guard let json = try? JSON.parse(body), case .object = json else {
            return .failure(Problem("bad_json", "the body must be a JSON object"))
        }
        func target() -> Result<Target, Problem> {
            switch (json["user"], json["client"]) {
            case let (.string(user)?, nil) where !user.isEmpty: return .success(.user(user))
            case let (nil, .string(client)?) where !client.isEmpty: return .success(.client(client))
            default: return .failure(Problem("bad_request", "name exactly one of \"user\" or \"client\" (a non-empty string)"))
            }
        }
        func channel() -> Result<String, Problem> {
            guard let c = json["channel"]?.stringValue else { return .failure(Problem("bad_request", "\"channel\" (a string) is required")) }
            if let problem = ChannelName.problem(c) { return .failure(Problem("bad_channel", problem)) }
            return .success(c)
        }
        func bool(_ key: String) -> Result<Bool, Problem> {
            switch json[key] {
            case nil: return .success(false)
            case let .bool(b)?: return .success(b)
            default: return .failure(Problem("bad_request", "\"\(key)\" must be true or false"))
            }
        }
        switch name {
        case "disconnect":
            return target().flatMap { target in
                bool("reconnect").flatMap { reconnect in
                    bool("revoke").flatMap { revoke -> Result<ServerCommand, Problem> in
                        let reason = json["reason"]?.stringValue ?? "disconnected by the server"
                        guard reason.utf8.count <= 100 else { return .failure(Problem("bad_request", "\"reason\" is at most 100 bytes")) }
                        guard revoke else {
                            return .success(.disconnect(target, reconnect: reconnect, reason: reason, revokeBefore: nil, revokeUntil: nil))
                        }
                        guard case .user = target else { return .failure(Problem("bad_request", "\"revoke\" needs \"user\" (tokens belong to users)")) }
                        let before = json["revoke_before"]?.unsignedValue ?? nowSeconds
                        let until = json["revoke_until"]?.unsignedValue ?? (before + revokeSeconds)
                        guard until > nowSeconds else { return .failure(Problem("bad_request", "\"revoke_until\" is in the past")) }
                        return .success(.disconnect(target, reconnect: reconnect, reason: reason, revokeBefore: before, revokeUntil: until))
                    }
                }
            }
        case "unsubscribe":
            return target().flatMap { t in channel().map { .unsubscribe(t, channel: $0) } }
        case "subscribe":
            return target().flatMap { t in channel().map { .subscribe(t, channel: $0) } }
        default:
            guard case let .array(items)? = json["channels"], !items.isEmpty else {
                return .failure(Problem("bad_request", "\"channels\" must be a non-empty list of channel names"))
            }
            guard items.count <= maxBroadcastChannels else {
                return .failure(Problem("bad_request", "at most \(maxBroadcastChannels) channels per broadcast"))
            }
            var channels: [String] = []
            var seen = Set<String>()
            for item in items {
                guard let c = item.stringValue else { return .failure(Problem("bad_request", "\"channels\" must hold strings")) }
                if let problem = ChannelName.problem(c) { return .failure(Problem("bad_channel", "\(c): \(problem)")) }
                if seen.insert(c).inserted { channels.append(c) }
            }
            guard let data = json["data"] else { return .failure(Problem("bad_request", "\"data\" (any JSON value) is required")) }
            var bytes: [UInt8] = []
            JSON.encode(data, to: &bytes)
            var id: String?
            if let value = json["id"] {
                guard let s = value.stringValue, !s.isEmpty, s.utf8.count <= 200 else {
                    return .failure(Problem("bad_request", "\"id\" must be a non-empty string of at most 200 bytes"))
                }
                id = s
            }
            return .success(.broadcast(channels: channels, data: bytes, id: id))
        }
    }
}

/// Users whose tokens issued before some second are refused (the server API's `revoke`).
public protocol TokenRevocations: Sendable {
    /// Tokens of `user` with `iat` before this second (or without `iat`) are refused; nil: none.
    func revokedBefore(user: String, nowSeconds: UInt64) -> UInt64?
}
