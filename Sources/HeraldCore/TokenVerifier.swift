/// What a token must say besides its signature (all optional but the leeway).
public struct TokenRules: Sendable, Equatable {
    /// `iss` must equal this (`--token-issuer`).
    public var issuer: String?
    /// `aud` (a string or a list) must name this (`--token-audience`).
    public var audience: String?
    /// Clock skew allowed on `exp` and `nbf` (`--token-leeway`).
    public var leewaySeconds: UInt64
    /// The claim holding the channel patterns (`--token-channels-claim`); IdPs put custom claims
    /// under namespaced names such as `https://example.com/channels`.
    public var channelsClaim: String

    public static let defaultChannelsClaim = "channels"

    public init(issuer: String? = nil, audience: String? = nil, leewaySeconds: UInt64 = 0, channelsClaim: String = defaultChannelsClaim) {
        self.issuer = issuer
        self.audience = audience
        self.leewaySeconds = leewaySeconds
        self.channelsClaim = channelsClaim
    }
}

/// Verifies JWS compact tokens (RFC 7515/7519): the key decides the algorithm, then the claims
/// are checked against `TokenRules`.
public struct TokenVerifier: Sendable {
    public let store: any TokenKeyStore
    public let rules: TokenRules
    /// Users whose older tokens are refused (the server API's `revoke`), if the server keeps any.
    public var revocations: (any TokenRevocations)?
    /// The shared secret, when built from one, so `sign` can mint HS256 tokens.
    private let signingSecret: (key: [UInt8], hmac: HMACSHA256)?

    public init(keys: any TokenKeyStore, rules: TokenRules = TokenRules()) {
        store = keys
        self.rules = rules
        signingSecret = nil
    }

    /// HS256 with one shared secret.
    public init(secret: String, hmac: @escaping HMACSHA256, rules: TokenRules = TokenRules()) {
        store = StaticTokenKeys([.secret(secret, hmac: hmac)])
        self.rules = rules
        signingSecret = (Array(secret.utf8), hmac)
    }

    /// The claims of a valid, current token signed with one of the keys, or why not.
    public func verify(_ token: String, nowSeconds: UInt64) -> Result<TokenClaims, TokenError> {
        verifySigned(token).flatMap { claims(of: $0, nowSeconds: nowSeconds) }
    }

    /// The payload of a token whose signature is good (nothing else checked).
    public func verifySigned(_ token: String) -> Result<JSONValue, TokenError> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failure(TokenError(.malformed, "not a JWT (three dot-separated parts)")) }
        guard let headerBytes = Base64URL.decode(parts[0]), let payloadBytes = Base64URL.decode(parts[1]),
              let signature = Base64URL.decode(parts[2]) else {
            return .failure(TokenError(.malformed, "bad base64url"))
        }
        guard let header = try? JSON.parse(headerBytes), case .object = header else {
            return .failure(TokenError(.malformed, "header is not a JSON object"))
        }
        guard let name = header["alg"]?.stringValue, let algorithm = JWSAlgorithm(rawValue: name) else {
            return .failure(TokenError(.badAlgorithm, "alg must be one of \(JWSAlgorithm.allCases.map(\.rawValue).joined(separator: ", "))"))
        }
        if header["crit"] != nil { return .failure(TokenError(.malformed, "crit header parameters are not supported")) }
        var kid: String?
        if let value = header["kid"] {
            guard let s = value.stringValue else { return .failure(TokenError(.malformed, "kid must be a string")) }
            kid = s
        }
        let keys = store.keys(kid: kid)
        func unknown(_ kid: String) -> TokenError {
            var error = TokenError(.unknownKey, store.refreshesUnknownKeys ? "no key has kid \(kid) yet: retry" : "no key has kid \(kid)")
            error.retryable = store.refreshesUnknownKeys
            return error
        }
        if keys.isEmpty {
            return .failure(kid.map(unknown) ?? TokenError(.disabled, "tokens are not enabled on this server (no token keys)"))
        }
        let fitting = keys.filter { $0.algorithms.contains(algorithm) }
        guard !fitting.isEmpty else {
            if let kid, !keys.contains(where: { $0.kid == kid }) {
                return .failure(unknown(kid))
            }
            return .failure(TokenError(.algorithmMismatch, "no key of this server takes \(name): the key decides the algorithm"))
        }
        let signed = Array(parts[0].utf8) + [UInt8(ascii: ".")] + Array(parts[1].utf8)
        guard fitting.contains(where: { $0.verify(algorithm, signed, signature) }) else {
            return .failure(TokenError(.badSignature, "bad signature"))
        }
        guard let payload = try? JSON.parse(payloadBytes), case .object = payload else {
            return .failure(TokenError(.malformed, "payload is not a JSON object"))
        }
        return .success(payload)
    }

    /// The claims of a verified payload, checked against the clock and the rules.
    public func claims(of payload: JSONValue, nowSeconds: UInt64) -> Result<TokenClaims, TokenError> {
        guard let exp = payload["exp"]?.unsignedValue else { return .failure(TokenError(.badClaims, "exp is required")) }
        guard exp + rules.leewaySeconds > nowSeconds else { return .failure(TokenError(.expired, "token expired")) }
        if let nbf = payload["nbf"] {
            guard let notBefore = nbf.unsignedValue else { return .failure(TokenError(.badClaims, "nbf must be a number of seconds")) }
            if notBefore > nowSeconds + rules.leewaySeconds { return .failure(TokenError(.notYetValid, "token not valid yet (nbf)")) }
        }
        var iat: UInt64?
        if let value = payload["iat"] {
            guard let seconds = value.unsignedValue else { return .failure(TokenError(.badClaims, "iat must be a number of seconds")) }
            iat = seconds
        }
        if let issuer = rules.issuer, payload["iss"]?.stringValue != issuer {
            return .failure(TokenError(.badIssuer, "iss is not \(issuer)"))
        }
        if let audience = rules.audience {
            let named: [String]
            switch payload["aud"] {
            case let .string(one)?: named = [one]
            case let .array(many)?: named = many.compactMap(\.stringValue)
            default: named = []
            }
            guard named.contains(audience) else { return .failure(TokenError(.badAudience, "aud does not name \(audience)")) }
        }
        var sub = ""
        if let value = payload["sub"] {
            guard let s = value.stringValue else { return .failure(TokenError(.badClaims, "sub must be a string")) }
            sub = s
        }
        if let before = revocations?.revokedBefore(user: sub, nowSeconds: nowSeconds), (iat ?? 0) < before {
            return .failure(TokenError(.revoked, "tokens of this user issued before \(before) are revoked"))
        }
        var channels: [String] = []
        if let list = payload[rules.channelsClaim] {
            guard case let .array(items) = list else { return .failure(TokenError(.badClaims, "\(rules.channelsClaim) must be a list of strings")) }
            for item in items {
                guard let s = item.stringValue, ChannelPattern.problem(s) == nil else {
                    return .failure(TokenError(.badClaims, "bad channel pattern in token"))
                }
                channels.append(s)
            }
        }
        var channelClaim: String?
        if let value = payload["channel"] {
            guard let c = value.stringValue, ChannelPattern.problem(c) == nil else {
                return .failure(TokenError(.badClaims, "channel must be a channel name or pattern"))
            }
            channelClaim = c
        }
        var info: [UInt8]?
        if let value = payload["info"] {
            guard case .object = value else { return .failure(TokenError(.badClaims, "info must be a JSON object")) }
            var bytes: [UInt8] = []
            JSON.encode(value, to: &bytes)
            guard bytes.count <= TokenClaims.maxInfoBytes else {
                return .failure(TokenError(.badClaims, "info is larger than \(TokenClaims.maxInfoBytes) bytes"))
            }
            info = bytes
        }
        var claims = TokenClaims(sub: sub, exp: exp, channels: channels, info: info, iat: iat)
        claims.channel = channelClaim
        if let problem = claims.readTalkBack(from: payload, source: "the token") { return .failure(TokenError(.badClaims, problem)) }
        return .success(claims)
    }

    /// A subscription token for `channel` on a connection of `sub` (anonymous: ""): valid, the
    /// same `sub`, and naming the channel in its `channel` claim or its channel patterns.
    public func verifySubscription(_ token: String, channel: String, sub: String, nowSeconds: UInt64) -> Result<TokenClaims, TokenError> {
        verify(token, nowSeconds: nowSeconds).flatMap { claims in
            guard claims.sub == sub else {
                return .failure(TokenError(.badClaims, "the token's sub is not the connection's"))
            }
            let named = claims.channel.map { ChannelPattern.matches($0, channel) } ?? false
            guard named || claims.allows(channel) else {
                return .failure(TokenError(.badClaims, "the token does not name this channel"))
            }
            return .success(claims)
        }
    }

    /// An HS256 token under the shared secret this verifier was built with (tests and
    /// `herald token --token-secret`); empty (refused by every verifier) for a verifier of other keys.
    public func sign(_ claims: TokenClaims, notBefore: UInt64? = nil, extra: JWS.Extra = JWS.Extra()) -> String {
        guard let secret = signingSecret else { return "" }
        return JWS.compact(claims, algorithm: .hs256, notBefore: notBefore, extra: extra) { secret.hmac(secret.key, $0) }
    }
}

/// Building tokens: the payload Herald reads, signed by whatever the caller holds.
public enum JWS {
    /// Extra registered claims a minted token may carry.
    public struct Extra: Sendable {
        public var kid: String?
        public var issuer: String?
        public var audience: String?
        public var issuedAt: UInt64?
        public var channelsClaim: String
        public init(kid: String? = nil, issuer: String? = nil, audience: String? = nil, issuedAt: UInt64? = nil,
                    channelsClaim: String = TokenRules.defaultChannelsClaim) {
            self.kid = kid
            self.issuer = issuer
            self.audience = audience
            self.issuedAt = issuedAt
            self.channelsClaim = channelsClaim
        }
    }

    /// `header.payload.signature`, with `sign` given the signing input.
    public static func compact(_ claims: TokenClaims, algorithm: JWSAlgorithm, notBefore: UInt64? = nil, extra: Extra = Extra(),
                               sign: ([UInt8]) -> [UInt8]) -> String {
        var header = Array(#"{"alg":"#.utf8)
        JSON.appendString(algorithm.rawValue.utf8, to: &header)
        header += Array(#","typ":"JWT""#.utf8)
        if let kid = extra.kid { header += Array(#","kid":"#.utf8); JSON.appendString(kid.utf8, to: &header) }
        header.append(UInt8(ascii: "}"))
        var payload = Array(#"{"sub":"#.utf8)
        JSON.appendString(claims.sub.utf8, to: &payload)
        payload += Array(",\"exp\":\(claims.exp),".utf8)
        if let notBefore { payload += Array("\"nbf\":\(notBefore),".utf8) }
        if let iat = extra.issuedAt ?? claims.iat { payload += Array("\"iat\":\(iat),".utf8) }
        if let issuer = extra.issuer { payload += Array(#""iss":"#.utf8); JSON.appendString(issuer.utf8, to: &payload); payload.append(UInt8(ascii: ",")) }
        if let audience = extra.audience { payload += Array(#""aud":"#.utf8); JSON.appendString(audience.utf8, to: &payload); payload.append(UInt8(ascii: ",")) }
        if let channel = claims.channel { payload += Array(#""channel":"#.utf8); JSON.appendString(channel.utf8, to: &payload); payload.append(UInt8(ascii: ",")) }
        JSON.appendString(extra.channelsClaim.utf8, to: &payload)
        payload += Array(":[".utf8)
        for (i, c) in claims.channels.enumerated() {
            if i > 0 { payload.append(UInt8(ascii: ",")) }
            JSON.appendString(c.utf8, to: &payload)
        }
        payload += Array("]".utf8)
        if !claims.publish.isEmpty { payload += Array(#","publish":"#.utf8); TalkBack.appendList(claims.publish, to: &payload) }
        if !claims.rpc.isEmpty { payload += Array(#","rpc":"#.utf8); TalkBack.appendList(claims.rpc, to: &payload) }
        if let info = claims.info { payload += Array(",\"info\":".utf8) + info }
        payload += Array("}".utf8)
        let body = Base64URL.encode(header) + "." + Base64URL.encode(payload)
        return body + "." + Base64URL.encode(sign(Array(body.utf8)))
    }
}
