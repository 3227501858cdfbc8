/// The JWS algorithms Herald verifies (RFC 7518 §3, RFC 8037 for EdDSA). `none` is not one.
public enum JWSAlgorithm: String, Sendable, CaseIterable {
    case hs256 = "HS256"
    case rs256 = "RS256", rs384 = "RS384", rs512 = "RS512", ps256 = "PS256"
    case es256 = "ES256", es384 = "ES384"
    case edDSA = "EdDSA"

    /// The digest behind the signature (EdDSA hashes internally: none).
    public var digestBits: Int? {
        switch self {
        case .hs256, .rs256, .ps256, .es256: 256
        case .rs384, .es384: 384
        case .rs512: 512
        case .edDSA: nil
        }
    }
}

/// What a key is. The key decides the algorithms a token may name: an RSA key verifies only
/// RS*/PS*, a P-256 key only ES256, the shared secret only HS256. So a token cannot pick its
/// algorithm against a key (RFC 8725 §2.1, §3.1).
public enum KeyKind: String, Sendable, Equatable {
    case hmac, rsa, ecP256 = "P-256", ecP384 = "P-384", ed25519 = "Ed25519"

    public var algorithms: [JWSAlgorithm] {
        switch self {
        case .hmac: [.hs256]
        case .rsa: [.rs256, .rs384, .rs512, .ps256]
        case .ecP256: [.es256]
        case .ecP384: [.es384]
        case .ed25519: [.edDSA]
        }
    }

    /// Bytes of each of `r` and `s` in a JWS ECDSA signature.
    public var ecdsaWidth: Int? {
        switch self {
        case .ecP256: 32
        case .ecP384: 48
        default: nil
        }
    }
}

/// One key a token may be signed with: its `kid` (nil: a key without a name, such as the shared
/// secret or a PEM file, tried for any token), the algorithms it allows, and the check itself.
public struct TokenKey: Sendable {
    public let kid: String?
    public let kind: KeyKind
    public let algorithms: [JWSAlgorithm]
    /// True when `signature` is valid for `signingInput` under this key and `algorithm`.
    public let verify: @Sendable (_ algorithm: JWSAlgorithm, _ signingInput: [UInt8], _ signature: [UInt8]) -> Bool

    public init(kid: String?, kind: KeyKind, algorithms: [JWSAlgorithm]? = nil,
                verify: @escaping @Sendable (JWSAlgorithm, [UInt8], [UInt8]) -> Bool) {
        self.kid = kid
        self.kind = kind
        self.algorithms = algorithms ?? kind.algorithms
        self.verify = verify
    }

    /// The HS256 shared secret as a key.
    public static func secret(_ secret: String, hmac: @escaping HMACSHA256) -> TokenKey {
        let key = Array(secret.utf8)
        return TokenKey(kid: nil, kind: .hmac) { _, input, signature in
            signature.count == 32 && constantTimeEquals(hmac(key, input), signature)
        }
    }
}

/// Where a verifier finds keys. A JWKS fetched from a URL changes while Herald runs, so this is
/// asked at each verification; an implementation may start a refresh when `kid` is unknown.
public protocol TokenKeyStore: Sendable {
    /// Keys named `kid` followed by the unnamed keys; every key when `kid` is nil.
    func keys(kid: String?) -> [TokenKey]
    /// An unknown `kid` makes the store fetch its keys again (a JWKS URL): worth a retry.
    var refreshesUnknownKeys: Bool { get }
}

extension TokenKeyStore {
    public var refreshesUnknownKeys: Bool { false }
}

/// A fixed set of keys (the secret, PEM files, a JWKS file).
public struct StaticTokenKeys: TokenKeyStore {
    public let all: [TokenKey]
    public init(_ keys: [TokenKey]) { all = keys }
    public func keys(kid: String?) -> [TokenKey] { Self.select(all, kid: kid) }

    public static func select(_ keys: [TokenKey], kid: String?) -> [TokenKey] {
        guard let kid else { return keys }
        return keys.filter { $0.kid == kid } + keys.filter { $0.kid == nil }
    }
}

/// A JSON Web Key Set (RFC 7517 §5), read without crypto: each usable key as its kind, `kid`,
/// `alg` (if pinned) and SubjectPublicKeyInfo DER for libcrypto to load.
public struct JWKSet: Sendable, Equatable {
    public struct Key: Sendable, Equatable {
        public var kid: String?
        public var kind: KeyKind
        /// The `alg` member when present: then that algorithm alone.
        public var algorithm: JWSAlgorithm?
        public var subjectPublicKeyInfo: [UInt8]
    }

    public var keys: [Key] = []
    /// Keys left out and why (an encryption key, an unsupported type, a bad member).
    public var skipped: [String] = []

    public static func parse(_ bytes: [UInt8]) -> Result<JWKSet, TokenError> {
        guard let document = try? JSON.parse(bytes), case let .array(items)? = document["keys"] else {
            return .failure(TokenError(.malformed, "a JWKS is a JSON object with a \"keys\" array"))
        }
        var set = JWKSet()
        for (i, item) in items.enumerated() {
            switch key(item) {
            case let .success(key?): set.keys.append(key)
            case .success(nil): break
            case let .failure(why): set.skipped.append("key \(i)\(item["kid"]?.stringValue.map { " (kid \($0))" } ?? ""): \(why)")
            }
        }
        return .success(set)
    }

    private struct Skip: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// One key; nil for a key that is not for signatures (`use: enc`).
    private static func key(_ jwk: JSONValue) -> Result<Key?, Skip> {
        guard case .object = jwk, let kty = jwk["kty"]?.stringValue else { return .failure(Skip("no kty")) }
        if let use = jwk["use"], use.stringValue != "sig" { return .success(nil) }
        let kid = jwk["kid"]?.stringValue
        func bytes(_ name: String) -> [UInt8]? { jwk[name]?.stringValue.flatMap { Base64URL.decode($0) } }
        var key: Key
        switch kty {
        case "RSA":
            guard let n = bytes("n"), let e = bytes("e"), !e.isEmpty else { return .failure(Skip("RSA key without n and e")) }
            guard n.drop(while: { $0 == 0 }).count >= 256 else { return .failure(Skip("RSA keys must have at least 2048 bits")) }
            key = Key(kid: kid, kind: .rsa, subjectPublicKeyInfo: DER.rsaPublicKey(modulus: n, exponent: e))
        case "EC":
            let kind: KeyKind
            switch jwk["crv"]?.stringValue {
            case "P-256": kind = .ecP256
            case "P-384": kind = .ecP384
            default: return .failure(Skip("EC curve must be P-256 or P-384"))
            }
            guard let x = bytes("x"), let y = bytes("y"), x.count == kind.ecdsaWidth, y.count == kind.ecdsaWidth else {
                return .failure(Skip("EC key without x and y of the curve's size"))
            }
            key = Key(kid: kid, kind: kind, subjectPublicKeyInfo: DER.ecPublicKey(curve: kind, x: x, y: y))
        case "OKP":
            guard jwk["crv"]?.stringValue == "Ed25519" else { return .failure(Skip("OKP curve must be Ed25519")) }
            guard let x = bytes("x"), x.count == 32 else { return .failure(Skip("Ed25519 key without a 32-byte x")) }
            key = Key(kid: kid, kind: .ed25519, subjectPublicKeyInfo: DER.ed25519PublicKey(x))
        default:
            return .failure(Skip("kty \(kty) is not supported (RSA, EC, OKP)"))
        }
        if let alg = jwk["alg"] {
            guard let name = alg.stringValue, let algorithm = JWSAlgorithm(rawValue: name), key.kind.algorithms.contains(algorithm) else {
                return .failure(Skip("alg \(alg.stringValue ?? "?") does not fit a \(key.kind.rawValue) key"))
            }
            key.algorithm = algorithm
        }
        return .success(key)
    }
}
