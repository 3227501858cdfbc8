/// Connection tokens: JWT (RFC 7519) signed with HS256, carrying `sub`, `exp` and `channels`
/// (names, or prefixes ending in `*`, such as `chat:*`; `*` alone is every channel).
public struct TokenClaims: Equatable, Sendable {
    public var sub: String
    public var exp: UInt64            // seconds since the Unix epoch
    public var channels: [String]
    /// The `info` claim (a JSON object, compact): shown to other members of presence channels.
    public var info: [UInt8]?
    /// When it was issued (`iat`), if it says: a revocation refuses tokens issued before it.
    public var iat: UInt64?
    /// A subscription token's `channel` claim (a name or a pattern), if it has one.
    public var channel: String?
    /// The `publish` claim: channel patterns this user may publish to from a WebSocket, where
    /// the channel's namespace has `client-publish: token`.
    public var publish: [String] = []
    /// The `rpc` claim: RPC method patterns (`cart.*`) this user may call, besides `--rpc-methods`.
    public var rpc: [String] = []

    public init(sub: String, exp: UInt64, channels: [String], info: [UInt8]? = nil, iat: UInt64? = nil) {
        self.sub = sub
        self.exp = exp
        self.channels = channels
        self.info = info
        self.iat = iat
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
        /// `alg` is not one Herald verifies (`none` included).
        case badAlgorithm = "bad_alg"
        /// No key of the server allows the token's `alg` (an HS256 token against RSA keys).
        case algorithmMismatch = "alg_mismatch"
        /// The token names a `kid` no key has (a JWKS URL is asked again, at most every 10 s).
        case unknownKey = "unknown_kid"
        case badSignature = "bad_signature"
        case expired
        case notYetValid = "not_yet_valid"
        /// `iss` is not `--token-issuer`.
        case badIssuer = "bad_issuer"
        /// `aud` does not name `--token-audience`.
        case badAudience = "bad_audience"
        /// A required claim is missing or has the wrong type.
        case badClaims = "bad_claims"
        /// The user's tokens issued before a revocation (`POST /api/disconnect` with `revoke`).
        case revoked
        /// A token was presented to a server with no token keys.
        case disabled
    }
    public let reason: Reason
    public let description: String
    /// Trying again soon may succeed (a kid while the key set is being fetched again).
    public var retryable = false
    public init(_ reason: Reason, _ description: String) {
        self.reason = reason
        self.description = description
    }
}

/// HMAC-SHA256 of `message` under `key`. HeraldCore has no crypto of its own: the server passes
/// a vetted implementation in (libcrypto, through HeraldCrypto).
public typealias HMACSHA256 = @Sendable (_ key: [UInt8], _ message: [UInt8]) -> [UInt8]

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
