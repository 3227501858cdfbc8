/// Connection tokens: JWT (RFC 7519) signed with HS256, carrying `sub`, `exp` and `channels`
/// (names, or prefixes ending in `*`, such as `chat:*`; `*` alone is every channel).
public struct TokenClaims: Equatable, Sendable {
    public var sub: String
    public var exp: UInt64            // seconds since the Unix epoch
    public var channels: [String]
    /// The `info` claim (a JSON object, compact): shown to other members of presence channels.
    public var info: [UInt8]?

    public init(sub: String, exp: UInt64, channels: [String], info: [UInt8]? = nil) {
        self.sub = sub
        self.exp = exp
        self.channels = channels
        self.info = info
    }

    /// The largest `info` claim accepted: it travels with every presence frame of the member.
    public static let maxInfoBytes = 1_024

    public func allows(_ channel: String) -> Bool { ChannelPattern.matches(any: channels, channel) }
}

public enum ChannelPattern {
    /// `chat:*` matches every channel starting with `chat:`; `*` matches all; else exact.
    public static func matches(_ pattern: String, _ channel: String) -> Bool {
        if pattern.hasSuffix("*") { return channel.hasPrefix(pattern.dropLast()) }
        return pattern == channel
    }

    public static func matches(any patterns: [String], _ channel: String) -> Bool {
        patterns.contains { matches($0, channel) }
    }

    /// Why a pattern cannot be used, or nil: a channel name, optionally followed by one `*`.
    public static func problem(_ pattern: String) -> String? {
        if pattern == "*" { return nil }
        let name = pattern.hasSuffix("*") ? String(pattern.dropLast()) : pattern
        if name.contains("*") { return "\"*\" may only end a pattern" }
        return ChannelName.problem(name)
    }
}

/// Why a token was refused: a stable `reason` (a metric label and a log field) and a sentence.
public struct TokenError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        /// Not three base64url parts, or a part that is not strict base64url or not JSON.
        case malformed
        /// `alg` is not `HS256` (`none` included).
        case badAlgorithm = "bad_alg"
        case badSignature = "bad_signature"
        case expired
        case notYetValid = "not_yet_valid"
        /// A required claim is missing or has the wrong type.
        case badClaims = "bad_claims"
        /// A token was presented to a server without `--token-secret`.
        case disabled
    }
    public let reason: Reason
    public let description: String
    public init(_ reason: Reason, _ description: String) {
        self.reason = reason
        self.description = description
    }
}

/// HMAC-SHA256 of `message` under `key`. HeraldCore has no crypto of its own: the server passes
/// a vetted implementation in (libcrypto, through HeraldCrypto).
public typealias HMACSHA256 = @Sendable (_ key: [UInt8], _ message: [UInt8]) -> [UInt8]

public struct TokenVerifier: Sendable {
    private let key: [UInt8]
    private let hmac: HMACSHA256

    public init(secret: String, hmac: @escaping HMACSHA256) {
        key = Array(secret.utf8)
        self.hmac = hmac
    }

    /// The claims of a valid, unexpired token signed with this secret, or why not.
    public func verify(_ token: String, nowSeconds: UInt64) -> Result<TokenClaims, TokenError> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failure(TokenError(.malformed, "not a JWT (three dot-separated parts)")) }
        guard let headerBytes = Base64URL.decode(parts[0]), let payloadBytes = Base64URL.decode(parts[1]),
              let signature = Base64URL.decode(parts[2]) else {
            return .failure(TokenError(.malformed, "bad base64url"))
        }
        guard let header = try? JSON.parse(headerBytes), case .object = header else {
            return .failure(TokenError(.malformed, "header is not a JSON object"))
        }
        guard header["alg"]?.stringValue == "HS256" else {
            return .failure(TokenError(.badAlgorithm, "only alg HS256 is accepted"))
        }
        let signed = Array(parts[0].utf8) + [UInt8(ascii: ".")] + Array(parts[1].utf8)
        guard signature.count == 32, constantTimeEquals(hmac(key, signed), signature) else {
            return .failure(TokenError(.badSignature, "bad signature"))
        }
        guard let payload = try? JSON.parse(payloadBytes), case .object = payload else {
            return .failure(TokenError(.malformed, "payload is not a JSON object"))
        }
        guard let exp = payload["exp"]?.unsignedValue else { return .failure(TokenError(.badClaims, "exp is required")) }
        guard exp > nowSeconds else { return .failure(TokenError(.expired, "token expired")) }
        if let nbf = payload["nbf"] {
            guard let notBefore = nbf.unsignedValue else { return .failure(TokenError(.badClaims, "nbf must be a number of seconds")) }
            if notBefore > nowSeconds { return .failure(TokenError(.notYetValid, "token not valid yet (nbf)")) }
        }
        let sub = payload["sub"]?.stringValue ?? ""
        var channels: [String] = []
        if let list = payload["channels"] {
            guard case let .array(items) = list else { return .failure(TokenError(.badClaims, "channels must be a list of strings")) }
            for item in items {
                guard let s = item.stringValue, ChannelPattern.problem(s) == nil else {
                    return .failure(TokenError(.badClaims, "bad channel pattern in token"))
                }
                channels.append(s)
            }
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
        return .success(TokenClaims(sub: sub, exp: exp, channels: channels, info: info))
    }

    /// A signed token (for `herald token` and tests).
    public func sign(_ claims: TokenClaims, notBefore: UInt64? = nil) -> String {
        let header = Base64URL.encode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        var payload = Array(#"{"sub":"#.utf8)
        JSON.appendString(claims.sub.utf8, to: &payload)
        payload += Array(",\"exp\":\(claims.exp),".utf8)
        if let notBefore { payload += Array("\"nbf\":\(notBefore),".utf8) }
        payload += Array("\"channels\":[".utf8)
        for (i, c) in claims.channels.enumerated() {
            if i > 0 { payload.append(UInt8(ascii: ",")) }
            JSON.appendString(c.utf8, to: &payload)
        }
        payload += Array("]".utf8)
        if let info = claims.info { payload += Array(",\"info\":".utf8) + info }
        payload += Array("}".utf8)
        let body = header + "." + Base64URL.encode(payload)
        return body + "." + Base64URL.encode(hmac(key, Array(body.utf8)))
    }
}

public enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        var i = 0
        while i + 2 < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)]]
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)]]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Strict unpadded base64url (RFC 4648 §5, as JWS uses it, RFC 7515 §2): no `=`, no other
    /// alphabet, no length that leaves a lone character, and the unused low bits of the last
    /// character must be zero. So each byte string has exactly one encoding, and two different
    /// token strings never carry one signature.
    public static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        var values = [UInt8]()
        values.reserveCapacity(text.utf8.count)
        for c in text.utf8 {
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): values.append(c - 65)
            case UInt8(ascii: "a")...UInt8(ascii: "z"): values.append(c - 97 + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): values.append(c - 48 + 52)
            case UInt8(ascii: "-"): values.append(62)
            case UInt8(ascii: "_"): values.append(63)
            default: return nil
            }
        }
        switch values.count % 4 {
        case 1: return nil
        case 2: if values[values.count - 1] & 0x0F != 0 { return nil }   // 4 bits unused
        case 3: if values[values.count - 1] & 0x03 != 0 { return nil }   // 2 bits unused
        default: break
        }
        var out = [UInt8]()
        out.reserveCapacity(values.count * 3 / 4)
        var i = 0
        while i < values.count {
            let chunk = values[i..<min(i + 4, values.count)]
            var n: UInt32 = 0
            for (j, v) in chunk.enumerated() { n |= UInt32(v) << UInt32(18 - 6 * j) }
            out.append(UInt8(n >> 16 & 0xFF))
            if chunk.count > 2 { out.append(UInt8(n >> 8 & 0xFF)) }
            if chunk.count > 3 { out.append(UInt8(n & 0xFF)) }
            i += 4
        }
        return out
    }
}
