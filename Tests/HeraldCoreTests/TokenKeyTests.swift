import Testing
@testable import HeraldCore
import HeraldCrypto

/// Keys from identity providers: the key decides the algorithm, JWKs become SubjectPublicKeyInfo,
/// ECDSA signatures convert between JWS and DER, and the claims rules (iss, aud, leeway, claim).
@Suite struct TokenKeyTests {
    /// A key of `kind` whose check accepts any signature: so only the algorithm rule can refuse.
    func permissive(_ kind: KeyKind, kid: String? = nil) -> TokenKey {
        TokenKey(kid: kid, kind: kind) { _, _, _ in true }
    }

    func token(alg: String, kid: String? = nil, payload: String = #"{"sub":"u","exp":2000}"#) -> String {
        let header = kid.map { #"{"alg":"\#(alg)","kid":"\#($0)"}"# } ?? #"{"alg":"\#(alg)"}"#
        return Base64URL.encode(Array(header.utf8)) + "." + Base64URL.encode(Array(payload.utf8)) + "." + Base64URL.encode([1, 2, 3])
    }

    @Test func theKeyDecidesTheAlgorithm() {
        let rsaOnly = TokenVerifier(keys: StaticTokenKeys([permissive(.rsa)]))
        #expect(rsaOnly.verify(token(alg: "RS256"), nowSeconds: 1_000).reason == nil)
        #expect(rsaOnly.verify(token(alg: "PS256"), nowSeconds: 1_000).reason == nil)
        // An HS256 token against RSA keys: refused whatever its signature, the confusion attack.
        #expect(rsaOnly.verify(token(alg: "HS256"), nowSeconds: 1_000).reason == .algorithmMismatch)
        #expect(rsaOnly.verify(token(alg: "ES256"), nowSeconds: 1_000).reason == .algorithmMismatch)
        #expect(rsaOnly.verify(token(alg: "none"), nowSeconds: 1_000).reason == .badAlgorithm)
        #expect(rsaOnly.verify(token(alg: "HS512"), nowSeconds: 1_000).reason == .badAlgorithm)
        let ec = TokenVerifier(keys: StaticTokenKeys([permissive(.ecP256), permissive(.ed25519)]))
        #expect(ec.verify(token(alg: "ES256"), nowSeconds: 1_000).reason == nil)
        #expect(ec.verify(token(alg: "EdDSA"), nowSeconds: 1_000).reason == nil)
        #expect(ec.verify(token(alg: "ES384"), nowSeconds: 1_000).reason == .algorithmMismatch)
        // A JWK's alg pins one algorithm of its kind.
        let pinned = TokenVerifier(keys: StaticTokenKeys([TokenKey(kid: "k", kind: .rsa, algorithms: [.ps256]) { _, _, _ in true }]))
        #expect(pinned.verify(token(alg: "RS256", kid: "k"), nowSeconds: 1_000).reason == .algorithmMismatch)
        #expect(pinned.verify(token(alg: "PS256", kid: "k"), nowSeconds: 1_000).reason == nil)
        #expect(TokenVerifier(keys: StaticTokenKeys([])).verify(token(alg: "RS256"), nowSeconds: 1_000).reason == .disabled)
    }

    @Test func kidsSelectKeys() {
        let keys = ["a", "b"].map { name in
            TokenKey(kid: name, kind: .rsa) { _, _, _ in name == "b" }
        }
        let v = TokenVerifier(keys: StaticTokenKeys(keys))
        #expect(v.verify(token(alg: "RS256", kid: "b"), nowSeconds: 1_000).reason == nil)
        #expect(v.verify(token(alg: "RS256", kid: "a"), nowSeconds: 1_000).reason == .badSignature)
        #expect(v.verify(token(alg: "RS256", kid: "c"), nowSeconds: 1_000).reason == .unknownKey)
        // Without a kid every key is tried.
        #expect(v.verify(token(alg: "RS256"), nowSeconds: 1_000).reason == nil)
        // An unnamed key (a PEM file) is tried for any kid; an unknown kid with it: its signature decides.
        let mixed = TokenVerifier(keys: StaticTokenKeys([TokenKey(kid: nil, kind: .ecP256) { _, _, _ in false }]))
        #expect(mixed.verify(token(alg: "ES256", kid: "zz"), nowSeconds: 1_000).reason == .badSignature)
        #expect(mixed.verify(token(alg: "RS256", kid: "zz"), nowSeconds: 1_000).reason == .unknownKey)
    }

    @Test func issuerAudienceLeewayAndTheChannelsClaim() {
        let keys = StaticTokenKeys([permissive(.rsa)])
        let rules = TokenRules(issuer: "https://idp", audience: "herald", leewaySeconds: 5, channelsClaim: "https://x/channels")
        let v = TokenVerifier(keys: keys, rules: rules)
        func payload(_ extra: String) -> String { #"{"sub":"u","exp":2000,"# + extra + "}" }
        let good = payload(#""iss":"https://idp","aud":["other","herald"],"https://x/channels":["chat:*"],"iat":900"#)
        guard case let .success(claims) = v.verify(token(alg: "RS256", payload: good), nowSeconds: 1_000) else {
            Issue.record("valid IdP token refused"); return
        }
        #expect(claims.channels == ["chat:*"] && claims.iat == 900 && claims.sub == "u")
        #expect(v.verify(token(alg: "RS256", payload: payload(#""iss":"https://evil","aud":"herald""#)), nowSeconds: 1_000).reason == .badIssuer)
        #expect(v.verify(token(alg: "RS256", payload: payload(#""aud":"herald""#)), nowSeconds: 1_000).reason == .badIssuer)
        #expect(v.verify(token(alg: "RS256", payload: payload(#""iss":"https://idp","aud":"other""#)), nowSeconds: 1_000).reason == .badAudience)
        #expect(v.verify(token(alg: "RS256", payload: payload(#""iss":"https://idp""#)), nowSeconds: 1_000).reason == .badAudience)
        // exp 2000 with 5 s leeway: still good at 2004, expired at 2005.
        let plain = TokenVerifier(keys: keys, rules: TokenRules(leewaySeconds: 5))
        #expect(plain.verify(token(alg: "RS256"), nowSeconds: 2_004).reason == nil)
        #expect(plain.verify(token(alg: "RS256"), nowSeconds: 2_005).reason == .expired)
        let early = token(alg: "RS256", payload: payload(#""nbf":1010"#))
        #expect(plain.verify(early, nowSeconds: 1_005).reason == nil)
        #expect(plain.verify(early, nowSeconds: 1_004).reason == .notYetValid)
        #expect(plain.verify(token(alg: "RS256", payload: payload(#""iat":"yesterday""#)), nowSeconds: 1_000).reason == .badClaims)
        // The default claim is ignored when another is configured.
        let other = token(alg: "RS256", payload: payload(#""iss":"https://idp","aud":"herald","channels":["*"]"#))
        #expect((try? v.verify(other, nowSeconds: 1_000).get())?.channels == [])
    }

    @Test func ecdsaSignaturesConvertBothWays() {
        var raw = [UInt8](repeating: 0, count: 64)
        raw[0] = 0x80   // r with its high bit set: DER needs a leading zero
        raw[31] = 1
        raw[63] = 7     // s = 7: DER strips its leading zeros
        let der = DER.ecdsaSignature(raw: raw, width: 32)!
        #expect(der == [0x30, 0x26, 0x02, 0x21, 0x00, 0x80] + [UInt8](repeating: 0, count: 30) + [1, 0x02, 0x01, 0x07])
        #expect(DER.rawECDSASignature(der: der, width: 32) == raw)
        #expect(DER.ecdsaSignature(raw: Array(raw.dropLast()), width: 32) == nil)
        #expect(DER.rawECDSASignature(der: der + [0], width: 32) == nil)
        #expect(DER.rawECDSASignature(der: der, width: 16) == nil)
    }

    @Test func jwksKeepsSignatureKeysAndSaysWhyOthersAreLeftOut() throws {
        let x = Base64URL.encode([UInt8](repeating: 7, count: 32))
        let short = Base64URL.encode([0xC0] + [UInt8](repeating: 1, count: 127))
        let document = """
            {"keys":[
              {"kty":"OKP","crv":"Ed25519","x":"\(x)","kid":"ed"},
              {"kty":"OKP","crv":"Ed25519","x":"\(x)","kid":"enc","use":"enc"},
              {"kty":"RSA","n":"\(short)","e":"AQAB","kid":"small"},
              {"kty":"EC","crv":"P-521","x":"\(x)","y":"\(x)","kid":"p521"},
              {"kty":"EC","crv":"P-256","x":"\(x)","y":"\(x)","kid":"p256","alg":"ES384"},
              {"kty":"oct","k":"c2VjcmV0","kid":"hmac"}
            ]}
            """
        let set = try JWKSet.parse(Array(document.utf8)).get()
        #expect(set.keys.map(\.kid) == ["ed"])
        #expect(set.keys[0].subjectPublicKeyInfo == [0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00] + [UInt8](repeating: 7, count: 32))
        #expect(set.skipped.count == 4)
        #expect(set.skipped.contains { $0.contains("small") && $0.contains("2048") })
        #expect(set.skipped.contains { $0.contains("p256") && $0.contains("ES384") })
        #expect(set.skipped.contains { $0.contains("hmac") && $0.contains("oct") })
        #expect(JWKSet.parse(Array(#"{"kids":[]}"#.utf8)).reason == .malformed)
    }

    /// RFC 8037 appendix A.4: an Ed25519 JWS verified through a JWK, end to end with libcrypto.
    @Test func rfc8037Ed25519ExampleVerifies() throws {
        let jwks = #"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#
        let keys = try CryptoKey.tokenKeys(jwks: Array(jwks.utf8)).get().keys
        #expect(keys.count == 1 && keys[0].kind == .ed25519)
        let jws = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        let parts = jws.split(separator: ".")
        let input = Array((parts[0] + "." + parts[1]).utf8)
        let signature = Base64URL.decode(parts[2])!
        #expect(keys[0].verify(.edDSA, input, signature))
        var flipped = signature
        flipped[5] ^= 1
        #expect(!keys[0].verify(.edDSA, input, flipped))
        // The key refuses an algorithm of another kind even with a good signature.
        #expect(!keys[0].verify(.es256, input, signature))
    }
}
