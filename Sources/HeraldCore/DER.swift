/// The little of DER (X.690) that JOSE keys and signatures need: SubjectPublicKeyInfo for a key
/// given as JWK parameters (RFC 7517/7518/8037), and ECDSA signatures between JWS's fixed-width
/// `r || s` (RFC 7518 §3.4) and the `SEQUENCE { r INTEGER, s INTEGER }` libcrypto speaks.
public enum DER {
    static func length(_ n: Int) -> [UInt8] {
        if n < 0x80 { return [UInt8(n)] }
        var bytes: [UInt8] = []
        var rest = n
        while rest > 0 { bytes.insert(UInt8(rest & 0xFF), at: 0); rest >>= 8 }
        return [0x80 | UInt8(bytes.count)] + bytes
    }

    static func element(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] { [tag] + length(content.count) + content }
    static func sequence(_ parts: [UInt8]...) -> [UInt8] { element(0x30, parts.flatMap { $0 }) }
    static func bitString(_ bytes: [UInt8]) -> [UInt8] { element(0x03, [0] + bytes) }

    /// A non-negative INTEGER from big-endian magnitude bytes.
    static func unsignedInteger(_ magnitude: [UInt8]) -> [UInt8] {
        var bytes = Array(magnitude.drop { $0 == 0 })
        if bytes.isEmpty { bytes = [0] }
        if bytes[0] & 0x80 != 0 { bytes.insert(0, at: 0) }
        return element(0x02, bytes)
    }

    static let rsaEncryption: [UInt8] = [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05, 0x00]
    static let ecPublicKey: [UInt8] = [0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]
    static let p256: [UInt8] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]
    static let p384: [UInt8] = [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22]
    static let ed25519: [UInt8] = [0x06, 0x03, 0x2B, 0x65, 0x70]

    /// SubjectPublicKeyInfo of an RSA key (modulus and exponent, big-endian).
    public static func rsaPublicKey(modulus: [UInt8], exponent: [UInt8]) -> [UInt8] {
        sequence(sequence(rsaEncryption), bitString(sequence(unsignedInteger(modulus), unsignedInteger(exponent))))
    }

    /// SubjectPublicKeyInfo of an EC key on P-256 or P-384 (uncompressed point).
    public static func ecPublicKey(curve: KeyKind, x: [UInt8], y: [UInt8]) -> [UInt8] {
        sequence(sequence(ecPublicKey, curve == .ecP384 ? p384 : p256), bitString([0x04] + x + y))
    }

    /// SubjectPublicKeyInfo of an Ed25519 key (RFC 8410).
    public static func ed25519PublicKey(_ x: [UInt8]) -> [UInt8] {
        sequence(sequence(ed25519), bitString(x))
    }

    /// JWS `r || s` (each `width` bytes) as a DER ECDSA-Sig-Value, or nil for a wrong length.
    public static func ecdsaSignature(raw: [UInt8], width: Int) -> [UInt8]? {
        guard raw.count == 2 * width else { return nil }
        return sequence(unsignedInteger(Array(raw[..<width])), unsignedInteger(Array(raw[width...])))
    }

    /// A DER ECDSA-Sig-Value as JWS `r || s`, each left-padded to `width` bytes, or nil.
    public static func rawECDSASignature(der: [UInt8], width: Int) -> [UInt8]? {
        var reader = Reader(bytes: der)
        guard let body = reader.read(tag: 0x30), reader.atEnd else { return nil }
        var inner = Reader(bytes: body)
        guard let r = inner.read(tag: 0x02), let s = inner.read(tag: 0x02), inner.atEnd else { return nil }
        var out: [UInt8] = []
        for part in [r, s] {
            let magnitude = Array(part.drop { $0 == 0 })
            guard magnitude.count <= width else { return nil }
            out += [UInt8](repeating: 0, count: width - magnitude.count) + magnitude
        }
        return out
    }

    struct Reader {
        let bytes: [UInt8]
        var at = 0
        var atEnd: Bool { at == bytes.count }

        /// The content of the next element if it has `tag` (definite lengths only).
        mutating func read(tag: UInt8) -> [UInt8]? {
            guard at + 2 <= bytes.count, bytes[at] == tag else { return nil }
            var n = Int(bytes[at + 1])
            at += 2
            if n & 0x80 != 0 {
                let count = n & 0x7F
                guard (1...3).contains(count), at + count <= bytes.count else { return nil }
                n = 0
                for _ in 0..<count { n = n << 8 | Int(bytes[at]); at += 1 }
            }
            guard at + n <= bytes.count else { return nil }
            defer { at += n }
            return Array(bytes[at..<at + n])
        }
    }
}
