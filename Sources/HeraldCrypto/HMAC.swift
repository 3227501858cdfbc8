import COpenSSL

/// HMAC-SHA256 from libcrypto (OpenSSL), the vetted implementation behind HS256 tokens.
/// HeraldCore's `TokenVerifier` takes this function, so HeraldCore itself stays free of C.
///
/// - Important: thread-safe; libcrypto's one-shot `HMAC()` keeps no state between calls.
public enum LibCrypto {
    public static let hmacSHA256: @Sendable ([UInt8], [UInt8]) -> [UInt8] = { key, message in
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = key.withUnsafeBufferPointer { k in
            message.withUnsafeBufferPointer { m in
                out.withUnsafeMutableBufferPointer { o in
                    // A zero-length buffer's base address may be nil; libcrypto takes any pointer then.
                    HMAC(EVP_sha256(), k.baseAddress ?? UnsafePointer(o.baseAddress!), Int32(k.count),
                         m.baseAddress ?? UnsafePointer(o.baseAddress!), m.count, o.baseAddress, &length) != nil
                }
            }
        }
        // HMAC() fails only when libcrypto cannot allocate. The empty answer matches no
        // signature (a verifier needs 32 bytes), so a token is refused rather than trusted.
        guard ok, length == 32 else { return [] }
        return Array(out.prefix(32))
    }
}
