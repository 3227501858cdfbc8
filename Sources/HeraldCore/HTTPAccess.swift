/// Who may use the HTTP API: the same rules as the WebSocket path, decided without I/O.
///
/// - History (`GET /api/history/{channel}`) follows the rule of subscribing: a channel covered by
///   `--anonymous-channels` (every channel without `--token-secret`) is readable by anyone; any
///   other needs an API key (`X-API-Key`, or `Authorization: Bearer <key>`) or a connection token
///   (`Authorization: Bearer <token>`) whose `channels` cover it. A bad or expired token is 401,
///   a valid one that does not cover the channel 403, no credentials 401.
/// - Publishing needs an API key whenever one is configured or reading is protected; with reading
///   protected and no key configured, HTTP publishing is refused (401) rather than left open.
public enum HTTPAccess: Equatable, Sendable {
    case allowed
    case refused(status: Int, code: String, message: String)

    /// What a request presented: the `X-API-Key` header and the `Authorization` header.
    public struct Credentials: Sendable {
        public var apiKey: String?
        public var authorization: String?
        public init(apiKey: String?, authorization: String?) {
            self.apiKey = apiKey
            self.authorization = authorization
        }

        /// The value after `Bearer ` (case-insensitive scheme), if that is the scheme.
        var bearer: String? {
            guard let authorization, authorization.utf8.count > 7,
                  authorization.prefix(7).lowercased() == "bearer " else { return nil }
            return String(authorization.dropFirst(7)).trimmingSpaces()
        }
    }

    /// The admin listener's data (`/api/*`, `/metrics`): with `--admin-token`, only
    /// `Authorization: Bearer <admin token>`; without one, anyone who reaches the listener.
    public static func admin(_ credentials: Credentials, token: String?) -> HTTPAccess {
        guard let token else { return .allowed }
        guard let presented = credentials.bearer else {
            return .refused(status: 401, code: "unauthorized", message: "the admin listener needs Authorization: Bearer <admin token>")
        }
        return constantTimeEquals(presented, token) ? .allowed : .refused(status: 401, code: "unauthorized", message: "wrong admin token")
    }

    public static func publish(_ credentials: Credentials, channel: String, config: HeraldConfig) -> HTTPAccess {
        if let namespace = config.namespace(of: channel) {
            if namespace.httpPublish == false {
                return .refused(status: 403, code: "publish_not_allowed",
                                message: "HTTP publishing is off for the channels of namespace \(namespace.name); publish to the exchange")
            }
            if let keys = namespace.publishKeys {
                guard let key = credentials.apiKey ?? credentials.bearer else {
                    return .refused(status: 401, code: "unauthorized", message: "missing API key (X-API-Key or Authorization: Bearer)")
                }
                if keys.contains(where: { constantTimeEquals($0, key) }) { return .allowed }
                return config.isAPIKey(key)
                    ? .refused(status: 403, code: "forbidden", message: "this API key may not publish to namespace \(namespace.name)")
                    : .refused(status: 401, code: "unauthorized", message: "wrong API key")
            }
        }
        if config.apiKeys.isEmpty {
            if !config.readingIsProtected { return .allowed }
            return .refused(status: 401, code: "unauthorized",
                            message: "HTTP publishing needs an API key and this server has none (--api-key); reading is protected (--token-secret), so publishing is not left open")
        }
        guard let key = credentials.apiKey ?? credentials.bearer else {
            return .refused(status: 401, code: "unauthorized", message: "missing API key (X-API-Key or Authorization: Bearer)")
        }
        return config.isAPIKey(key) ? .allowed : .refused(status: 401, code: "unauthorized", message: "wrong API key")
    }

    /// The server API (`/api/disconnect`, `/api/subscribe`, `/api/unsubscribe`, `/api/broadcast`,
    /// `/api/channels`, `/api/info`) acts on every user and node: it needs one of `--api-key`,
    /// never a namespace's publish key, and is never open (no key configured: 401).
    public static func serverAPI(_ credentials: Credentials, config: HeraldConfig) -> HTTPAccess {
        guard !config.apiKeys.isEmpty else {
            return .refused(status: 401, code: "unauthorized", message: "the server API needs an API key and this server has none (--api-key)")
        }
        guard let key = credentials.apiKey ?? credentials.bearer else {
            return .refused(status: 401, code: "unauthorized", message: "missing API key (X-API-Key or Authorization: Bearer)")
        }
        if config.isAPIKey(key) { return .allowed }
        return config.isPublishKey(key) ? .refused(status: 403, code: "forbidden", message: "a namespace's publish key does not open the server API")
                                        : .refused(status: 401, code: "unauthorized", message: "wrong API key")
    }

    /// A namespace publish key grants publishing to its namespace only: a backend that feeds a
    /// channel is not given what its readers read. Known, so 403 rather than 401.
    static let publishKeyReads = HTTPAccess.refused(status: 403, code: "forbidden",
                                                    message: "this key publishes (a namespace's publish-keys) and does not read: read with a connection token or an --api-key")

    public static func history(_ credentials: Credentials, channel: String, config: HeraldConfig,
                               verifier: TokenVerifier?, nowSeconds: UInt64) -> HTTPAccess {
        if config.isAnonymous(channel) { return .allowed }
        if let key = credentials.apiKey {
            if config.isAPIKey(key) { return .allowed }
            return config.isPublishKey(key) ? publishKeyReads : .refused(status: 401, code: "unauthorized", message: "wrong API key")
        }
        guard let bearer = credentials.bearer else {
            return .refused(status: 401, code: "unauthorized",
                            message: "this channel needs a connection token (Authorization: Bearer) or an API key (X-API-Key)")
        }
        if config.isAPIKey(bearer) { return .allowed }
        if config.isPublishKey(bearer) { return publishKeyReads }
        guard let verifier else {
            return .refused(status: 401, code: "unauthorized", message: "tokens are not enabled on this server (no token keys)")
        }
        switch verifier.verify(bearer, nowSeconds: nowSeconds) {
        case let .failure(error):
            return .refused(status: 401, code: "unauthorized", message: "invalid token: \(error)")
        case let .success(claims):
            return claims.allows(channel)
                ? .allowed
                : .refused(status: 403, code: "forbidden", message: "your token does not cover this channel")
        }
    }
}

extension HeraldConfig {
    /// Whether some channel needs a token to read: a token secret, or anonymous channels narrower
    /// than every channel.
    public var readingIsProtected: Bool {
        tokensEnabled || !anonymousPatterns.contains("*") || namespaces.contains { $0.anonymous == false }
    }

    /// Whether `key` is one of the configured API keys (compared in constant time).
    /// One of a namespace's `publish-keys` (which publish, and never read).
    public func isPublishKey(_ key: String) -> Bool {
        var found = false
        for namespace in namespaces { for k in namespace.publishKeys ?? [] where constantTimeEquals(k, key) { found = true } }
        return found
    }

    public func isAPIKey(_ key: String) -> Bool {
        var found = false
        for k in apiKeys where constantTimeEquals(k, key) { found = true }
        return found
    }
}

extension String {
    /// The string without leading and trailing spaces and tabs (HTTP's optional whitespace).
    public func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
