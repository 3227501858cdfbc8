import ArgumentParser
import HeraldCore
import HeraldCrypto
#if canImport(Glibc)
import Glibc
#endif

struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a connection token (JWT) for trying Herald out: HS256 with the shared secret, or RS/PS/ES/EdDSA with a private key.",
        discussion: """
            HS256: the secret comes from --token-secret or HERALD_TOKEN_SECRET, the same one `herald serve` uses.
            With --private-key-file (PEM: RSA, EC P-256/P-384 or Ed25519) the token is signed as an identity provider would \
            sign it; `herald serve` verifies it with the public key (--token-public-key-file, --jwks-file or --jwks-url).
            """)

    @Option(help: "Who the token is for (the sub claim).") var sub: String
    @Option(help: "Channels or patterns (chat:*) it may read; repeat or comma-separate.") var channels: [String] = []
    @Option(help: "Channels or patterns it may publish to from a WebSocket where the namespace has client-publish: token (the publish claim); repeat or comma-separate.") var publish: [String] = []
    @Option(help: "RPC method patterns (cart.*) it may call besides --rpc-methods (the rpc claim); repeat or comma-separate.") var rpc: [String] = []
    @Option(help: "How long it is valid: 90s, 30m, 1h, 7d.") var ttl = "1h"
    @Option(name: [.customLong("token-secret"), .customLong("secret")], help: "The HS256 secret (--secret is the same). (HERALD_TOKEN_SECRET)") var secret: String?
    @Option(help: "Sign with this private key (PEM) instead of the secret.") var privateKeyFile: String?
    @Option(help: "The algorithm for --private-key-file: RS256, RS384, RS512, PS256 (RSA), ES256 (P-256), ES384 (P-384), EdDSA (Ed25519). Default: RS256, ES256, ES384 or EdDSA by the key.") var alg: String?
    @Option(help: "The kid header (the key's id in a JWKS).") var kid: String?
    @Option(help: "The iss claim.") var iss: String?
    @Option(help: "The aud claim.") var aud: String?
    @Option(help: "The claim that holds the channels (as --token-channels-claim of serve).") var channelsClaim = TokenRules.defaultChannelsClaim

    func run() throws {
        let patterns = splitList(channels)
        for p in patterns where ChannelPattern.problem(p) != nil { throw ValidationError("\(p): \(ChannelPattern.problem(p)!)") }
        guard let seconds = Self.seconds(ttl) else { throw ValidationError("--ttl like 90s, 30m, 1h or 7d") }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let issued = UInt64(now.tv_sec)
        var claims = TokenClaims(sub: sub, exp: issued + seconds, channels: patterns)
        claims.publish = splitList(publish)
        claims.rpc = splitList(rpc)
        for p in claims.publish where ChannelPattern.problem(p) != nil { throw ValidationError("--publish \(p): \(ChannelPattern.problem(p)!)") }
        for p in claims.rpc where TalkBack.methodPatternProblem(p) != nil { throw ValidationError("--rpc \(p): \(TalkBack.methodPatternProblem(p)!)") }
        let extra = JWS.Extra(kid: kid, issuer: iss, audience: aud, issuedAt: issued, channelsClaim: channelsClaim)
        if let privateKeyFile {
            let key: CryptoKey
            do {
                key = try CryptoKey.privateKey(pem: Array(readTextFile(privateKeyFile).utf8))
            } catch {
                throw ValidationError("--private-key-file \(privateKeyFile): \(error)")
            }
            let algorithm: JWSAlgorithm
            if let alg {
                guard let a = JWSAlgorithm(rawValue: alg), a != .hs256, key.kind.algorithms.contains(a) else {
                    throw ValidationError("--alg \(alg) does not fit a \(key.kind.rawValue) key (\(key.kind.algorithms.map(\.rawValue).joined(separator: ", ")))")
                }
                algorithm = a
            } else {
                algorithm = key.kind.algorithms[0]
            }
            var failed = false
            let token = JWS.compact(claims, algorithm: algorithm, extra: extra) { input in
                guard let signature = key.sign(algorithm, input) else { failed = true; return [] }
                return signature
            }
            if failed { throw ValidationError("libcrypto could not sign with this key") }
            print(token)
            return
        }
        guard let secret, secret.utf8.count >= 16 else {
            throw ValidationError("give --token-secret or HERALD_TOKEN_SECRET (at least 16 bytes), or --private-key-file")
        }
        print(TokenVerifier(secret: secret, hmac: LibCrypto.hmacSHA256).sign(claims, extra: extra))
    }

    static func seconds(_ text: String) -> UInt64? {
        guard let unit = text.last, let n = UInt64(text.dropLast()), n > 0 else { return UInt64(text) }
        switch unit {
        case "s": return n
        case "m": return n * 60
        case "h": return n * 3600
        case "d": return n * 86_400
        default: return nil
        }
    }
}
