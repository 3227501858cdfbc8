/// Connection tokens: JWT (RFC 7519) signed with HS256, carrying `sub`, `exp` and `channels`
/// (names, or prefixes ending in `*`, such as `chat:*`; `*` alone is every channel).
public struct TokenClaims: Equatable, Sendable {
    public var sub: String
    public var exp: UInt64            // seconds since the Unix epoch
    public var channels: [String]

    public init(sub: String, exp: UInt64, channels: [String]) {
        self.sub = sub
        self.exp = exp
        self.channels = channels
    }

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

public struct TokenError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

public struct TokenVerifier: Sendable {
    private let key: [UInt8]

    public init(secret: String) { key = Array(secret.utf8) }

    /// The claims of a valid, unexpired token signed with this secret, or why not.
    public func verify(_ token: String, nowSeconds: UInt64) -> Result<TokenClaims, TokenError> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failure(TokenError("not a JWT (three dot-separated parts)")) }
        guard let headerBytes = Base64URL.decode(parts[0]), let payloadBytes = Base64URL.decode(parts[1]),
              let signature = Base64URL.decode(parts[2]) else {
            return .failure(TokenError("bad base64url"))
        }
        guard let header = try? JSON.parse(headerBytes), header["alg"]?.stringValue == "HS256" else {
            return .failure(TokenError("only alg HS256 is accepted"))
        }
        let signed = Array(parts[0].utf8) + [UInt8(ascii: ".")] + Array(parts[1].utf8)
        guard constantTimeEquals(SHA256.hmac(key: key, message: signed), signature) else {
            return .failure(TokenError("bad signature"))
        }
        guard let payload = try? JSON.parse(payloadBytes), case .object = payload else {
            return .failure(TokenError("payload is not a JSON object"))
        }
        guard let exp = payload["exp"]?.unsignedValue else { return .failure(TokenError("exp is required")) }
        guard exp > nowSeconds else { return .failure(TokenError("token expired")) }
        if let nbf = payload["nbf"]?.unsignedValue, nbf > nowSeconds { return .failure(TokenError("token not valid yet")) }
        let sub = payload["sub"]?.stringValue ?? ""
        var channels: [String] = []
        if let list = payload["channels"] {
            guard case let .array(items) = list else { return .failure(TokenError("channels must be a list of strings")) }
            for item in items {
                guard let s = item.stringValue, ChannelPattern.problem(s) == nil else {
                    return .failure(TokenError("bad channel pattern in token"))
                }
                channels.append(s)
            }
        }
        return .success(TokenClaims(sub: sub, exp: exp, channels: channels))
    }

    /// A signed token (for `herald token` and tests).
    public func sign(_ claims: TokenClaims) -> String {
        let header = Base64URL.encode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        var payload = Array(#"{"sub":"#.utf8)
        JSON.appendString(claims.sub.utf8, to: &payload)
        payload += Array(",\"exp\":\(claims.exp),\"channels\":[".utf8)
        for (i, c) in claims.channels.enumerated() {
            if i > 0 { payload.append(UInt8(ascii: ",")) }
            JSON.appendString(c.utf8, to: &payload)
        }
        payload += Array("]}".utf8)
        let body = header + "." + Base64URL.encode(payload)
        return body + "." + Base64URL.encode(SHA256.hmac(key: key, message: Array(body.utf8)))
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

    public static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        var values = [UInt8]()
        for c in text.utf8 {
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): values.append(c - 65)
            case UInt8(ascii: "a")...UInt8(ascii: "z"): values.append(c - 97 + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): values.append(c - 48 + 52)
            case UInt8(ascii: "-"): values.append(62)
            case UInt8(ascii: "_"): values.append(63)
            case UInt8(ascii: "="): continue
            default: return nil
            }
        }
        if values.count % 4 == 1 { return nil }
        var out = [UInt8]()
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
