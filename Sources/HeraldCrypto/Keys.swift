import COpenSSL
import HeraldCore

/// A public or private key in libcrypto (an `EVP_PKEY`), with the JWS algorithms its kind allows.
///
/// - Important: thread-safe: an `EVP_PKEY` is only read after loading, and every signature
///   check makes its own `EVP_MD_CTX`.
public final class CryptoKey: @unchecked Sendable {
    public struct LoadError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    private let key: OpaquePointer
    public let kind: KeyKind
    public let isPrivate: Bool

    private init(_ key: OpaquePointer, isPrivate: Bool) throws(LoadError) {
        self.key = key
        self.isPrivate = isPrivate
        let id = EVP_PKEY_get_base_id(key)
        let bits = EVP_PKEY_get_bits(key)
        if id == herald_pkey_rsa() {
            guard bits >= 2048 else { EVP_PKEY_free(key); throw LoadError("RSA keys must have at least 2048 bits (this one: \(bits))") }
            kind = .rsa
        } else if id == herald_pkey_ec(), bits == 256 || bits == 384 {
            var name = [CChar](repeating: 0, count: 64)
            var length = 0
            guard EVP_PKEY_get_group_name(key, &name, name.count, &length) == 1 else { EVP_PKEY_free(key); throw LoadError("EC key without a named curve") }
            switch String(decoding: name.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self) {
            case "prime256v1", "P-256": kind = .ecP256
            case "secp384r1", "P-384": kind = .ecP384
            case let other: EVP_PKEY_free(key); throw LoadError("EC curve \(other) is not supported (P-256, P-384)")
            }
        } else if id == herald_pkey_ed25519() {
            kind = .ed25519
        } else {
            EVP_PKEY_free(key)
            throw LoadError("unsupported key type (RSA of 2048 bits or more, EC P-256 or P-384, Ed25519)")
        }
    }

    deinit { EVP_PKEY_free(key) }

    /// A public key from PEM: `PUBLIC KEY` (SubjectPublicKeyInfo), `RSA PUBLIC KEY` or a `CERTIFICATE`.
    public static func publicKey(pem: [UInt8]) throws(LoadError) -> CryptoKey {
        if let key = readPEM(pem, { PEM_read_bio_PUBKEY($0, nil, nil, nil) }) { return try CryptoKey(key, isPrivate: false) }
        if let rsa = readPEM(pem, { bio -> OpaquePointer? in
            guard let cert = PEM_read_bio_X509(bio, nil, nil, nil) else { return nil }
            defer { X509_free(cert) }
            return X509_get_pubkey(cert)
        }) { return try CryptoKey(rsa, isPrivate: false) }
        throw LoadError("no PUBLIC KEY or CERTIFICATE in PEM")
    }

    /// A private key from PEM (PKCS#8 `PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`), unencrypted.
    public static func privateKey(pem: [UInt8]) throws(LoadError) -> CryptoKey {
        guard let key = readPEM(pem, { PEM_read_bio_PrivateKey($0, nil, nil, nil) }) else {
            throw LoadError("no unencrypted PRIVATE KEY in PEM")
        }
        return try CryptoKey(key, isPrivate: true)
    }

    /// A public key from SubjectPublicKeyInfo DER (as `JWKSet` builds it).
    public static func publicKey(der: [UInt8]) throws(LoadError) -> CryptoKey {
        let key: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var p: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_PUBKEY(nil, &p, buffer.count)
        }
        ERR_clear_error()
        guard let key else { throw LoadError("not a public key libcrypto can read") }
        return try CryptoKey(key, isPrivate: false)
    }

    private static func readPEM(_ pem: [UInt8], _ read: (OpaquePointer) -> OpaquePointer?) -> OpaquePointer? {
        defer { ERR_clear_error() }
        return pem.withUnsafeBytes { raw -> OpaquePointer? in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return read(bio)
        }
    }

    private static func digest(_ algorithm: JWSAlgorithm) -> OpaquePointer? {
        switch algorithm.digestBits {
        case 256: EVP_sha256()
        case 384: EVP_sha384()
        case 512: EVP_sha512()
        default: nil
        }
    }

    /// Sets up `ctx` for `algorithm` (signing or verifying); false if the key does not allow it.
    private func begin(_ ctx: OpaquePointer, _ algorithm: JWSAlgorithm, sign: Bool) -> Bool {
        guard kind.algorithms.contains(algorithm) else { return false }
        var pctx: OpaquePointer?
        let md = Self.digest(algorithm)
        let ok = sign ? EVP_DigestSignInit(ctx, &pctx, md, nil, key) : EVP_DigestVerifyInit(ctx, &pctx, md, nil, key)
        guard ok == 1, let pctx else { return false }
        switch algorithm {
        case .ps256: return herald_set_pss(pctx) == 1
        case .rs256, .rs384, .rs512: return herald_set_pkcs1(pctx) == 1
        default: return true
        }
    }

    /// Whether `signature` (JWS form: `r || s` for ECDSA) is valid for `input`.
    public func verify(_ algorithm: JWSAlgorithm, _ input: [UInt8], _ signature: [UInt8]) -> Bool {
        var sig = signature
        if let width = kind.ecdsaWidth {
            guard let der = DER.ecdsaSignature(raw: signature, width: width) else { return false }
            sig = der
        }
        guard let ctx = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(ctx); ERR_clear_error() }
        guard begin(ctx, algorithm, sign: false) else { return false }
        return EVP_DigestVerify(ctx, sig, sig.count, input, input.count) == 1
    }

    /// The JWS signature of `input`, or nil (a public key, or an algorithm the key does not allow).
    public func sign(_ algorithm: JWSAlgorithm, _ input: [UInt8]) -> [UInt8]? {
        guard isPrivate, let ctx = EVP_MD_CTX_new() else { return nil }
        defer { EVP_MD_CTX_free(ctx); ERR_clear_error() }
        guard begin(ctx, algorithm, sign: true) else { return nil }
        var length = 0
        guard EVP_DigestSign(ctx, nil, &length, input, input.count) == 1 else { return nil }
        var out = [UInt8](repeating: 0, count: length)
        guard EVP_DigestSign(ctx, &out, &length, input, input.count) == 1 else { return nil }
        out.removeSubrange(length...)
        if let width = kind.ecdsaWidth { return DER.rawECDSASignature(der: out, width: width) }
        return out
    }

    /// This key as a token key (`kid` from a JWKS, nil for a PEM file).
    public func tokenKey(kid: String?, algorithms: [JWSAlgorithm]? = nil) -> TokenKey {
        TokenKey(kid: kid, kind: kind, algorithms: algorithms) { [self] algorithm, input, signature in
            verify(algorithm, input, signature)
        }
    }

    /// The usable keys of a JWKS document, and what was left out.
    public static func tokenKeys(jwks: [UInt8]) -> Result<(keys: [TokenKey], skipped: [String]), TokenError> {
        JWKSet.parse(jwks).map { set in
            var keys: [TokenKey] = []
            var skipped = set.skipped
            for jwk in set.keys {
                do {
                    keys.append(try publicKey(der: jwk.subjectPublicKeyInfo).tokenKey(kid: jwk.kid, algorithms: jwk.algorithm.map { [$0] }))
                } catch {
                    skipped.append("kid \(jwk.kid ?? "-"): \(error)")
                }
            }
            return (keys, skipped)
        }
    }
}
