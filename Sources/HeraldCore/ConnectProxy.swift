/// The connect proxy (`--connect-proxy-url`) and the subscribe proxy (a namespace's
/// `subscribe-proxy-url`): what Herald sends the application's backend and how it reads the
/// answers. Pure: the server does the HTTP.
public enum ConnectIdentity {
    /// `expire_at` absent: the connection has no deadline of its own.
    public static let noExpiry: UInt64 = 9_007_199_254_740_991  // 2^53 - 1: exact in JavaScript

    /// The body POSTed at an upgrade: `{"transport", "remote_addr", "path", "query", "cookies", "headers"}`
    /// with the query pairs, the `Cookie` header parsed, and the headers named in `forward`.
    public static func requestBody(transport: String, remoteAddress: String, path: String, query: [(String, String)],
                                   headers: [String: String], forward: [String]) -> [UInt8] {
        var cookies: [(String, JSONValue)] = []
        for part in (headers["cookie"] ?? "").split(separator: ";") {
            let pair = part.split(separator: "=", maxSplits: 1)
            let name = pair.first.map { String($0).trimmingSpaces() } ?? ""
            if !name.isEmpty { cookies.append((name, .string(pair.count > 1 ? String(pair[1]).trimmingSpaces() : ""))) }
        }
        var forwarded: [(String, JSONValue)] = []
        for name in forward { if let value = headers[name.lowercased()] { forwarded.append((name.lowercased(), .string(value))) } }
        var out: [UInt8] = []
        JSON.encode(.object([
            ("transport", .string(transport)),
            ("remote_addr", .string(remoteAddress)),
            ("path", .string(path)),
            ("query", .object(query.filter { $0.0 != "token" }.map { ($0.0, .string($0.1)) })),
            ("cookies", .object(cookies)),
            ("headers", .object(forwarded)),
        ]), to: &out)
        return out
    }

    /// The backend's 200 answer: `{"user": ..., "channels": [...], "expire_at": <s>, "info": {...},
    /// "publish": [...], "rpc": [...]}` (the last two as the token claims of those names)
    /// (only `user` required; `""` is an anonymous connection).
    public static func parse(_ bytes: [UInt8], nowSeconds: UInt64) -> Result<TokenClaims, TokenError> {
        guard let json = try? JSON.parse(bytes), case .object = json else {
            return .failure(TokenError(.malformed, "the connect proxy's answer is not a JSON object"))
        }
        guard let user = json["user"]?.stringValue else { return .failure(TokenError(.badClaims, "the connect proxy's answer has no \"user\" string")) }
        var channels: [String] = []
        if let list = json["channels"] {
            guard case let .array(items) = list else { return .failure(TokenError(.badClaims, "channels must be a list of strings")) }
            for item in items {
                guard let c = item.stringValue, ChannelPattern.problem(c) == nil else {
                    return .failure(TokenError(.badClaims, "bad channel pattern in the connect proxy's answer"))
                }
                channels.append(c)
            }
        }
        var exp = noExpiry
        if let value = json["expire_at"], value != .null {
            guard let at = value.unsignedValue else { return .failure(TokenError(.badClaims, "expire_at must be seconds since the epoch")) }
            guard at > nowSeconds else { return .failure(TokenError(.expired, "expire_at is in the past")) }
            exp = at
        }
        var info: [UInt8]?
        if let value = json["info"], value != .null {
            guard case .object = value else { return .failure(TokenError(.badClaims, "info must be a JSON object")) }
            var encoded: [UInt8] = []
            JSON.encode(value, to: &encoded)
            guard encoded.count <= TokenClaims.maxInfoBytes else { return .failure(TokenError(.badClaims, "info is larger than \(TokenClaims.maxInfoBytes) bytes")) }
            info = encoded
        }
        var claims = TokenClaims(sub: user, exp: exp, channels: channels, info: info)
        if let problem = claims.readTalkBack(from: json, source: "the connect proxy's answer") { return .failure(TokenError(.badClaims, problem)) }
        return .success(claims)
    }

    /// The attachment the front carries from the proxy worker to the connection: the claims as JSON.
    public static func attachment(_ claims: TokenClaims) -> [UInt8] {
        var fields: [(String, JSONValue)] = [("user", .string(claims.sub)), ("channels", .array(claims.channels.map { .string($0) }))]
        if claims.exp != noExpiry { fields.append(("expire_at", .number(String(claims.exp)))) }
        if let info = claims.info.flatMap({ try? JSON.parse($0) }) { fields.append(("info", info)) }
        if !claims.publish.isEmpty { fields.append(("publish", .array(claims.publish.map { .string($0) }))) }
        if !claims.rpc.isEmpty { fields.append(("rpc", .array(claims.rpc.map { .string($0) }))) }
        var out: [UInt8] = []
        JSON.encode(.object(fields), to: &out)
        return out
    }

    /// What a WebSocket the connect proxy refused (401/403) is told with `--connect-proxy-refusal
    /// close`: the upgrade completes and the connection is closed with 4001 (401: the client needs
    /// new credentials) or 4003 (403: do not come back), codes a browser can read and the web
    /// client does not retry; a refused upgrade is only 1006 to a page.
    public static let refusalReason = "the application refused this connection (connect proxy)"
    public static func closeCode(refusal status: Int) -> UInt16 { status == 401 ? 4001 : 4003 }

    private static let refusalHead = Array("{\"refused\":".utf8)

    /// The attachment of a refused upgrade: `{"refused":401}`.
    public static func refusalAttachment(status: Int) -> [UInt8] { refusalHead + Array("\(status)}".utf8) }

    /// The status of a refusal attachment; nil for an identity (`attachment(_:)` writes `user`
    /// first), told by its first bytes so an admitted connection's identity is parsed only once.
    public static func refusal(_ attachment: [UInt8]) -> Int? {
        guard attachment.starts(with: refusalHead), attachment.last == UInt8(ascii: "}") else { return nil }
        return Int(String(decoding: attachment[refusalHead.count..<attachment.count - 1], as: UTF8.self))
    }

    /// The body POSTed to a subscribe proxy: `{"user", "client", "channel"[, "info"]}`.
    public static func subscribeBody(user: String?, client: String, channel: String, info: [UInt8]?) -> [UInt8] {
        var fields: [(String, JSONValue)] = [("user", user.map { .string($0) } ?? .null), ("client", .string(client)), ("channel", .string(channel))]
        if let info = info.flatMap({ try? JSON.parse($0) }) { fields.append(("info", info)) }
        var out: [UInt8] = []
        JSON.encode(.object(fields), to: &out)
        return out
    }
}

/// `--connect-proxy-refusal`: how a WebSocket the connect proxy refuses (401/403) is told.
/// `status` (the default): the upgrade is refused with that HTTP status and Herald's JSON error.
/// `close`: the upgrade completes and the connection is closed with 4001 or 4003
/// (`ConnectIdentity.closeCode(refusal:)`), which a browser can read. SSE is refused with the
/// status either way, as every SSE refusal before its stream starts is.
public enum ConnectProxyRefusal: String, Sendable, CaseIterable {
    case status
    case close
}
