import ArgumentParser
import HeraldCore
import HeraldCrypto
#if canImport(Glibc)
import Glibc
#endif

struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a connection token (JWT, HS256) for trying Herald out.",
        discussion: "The secret comes from --token-secret or HERALD_TOKEN_SECRET, the same one `herald serve` uses.")

    @Option(help: "Who the token is for (the sub claim).") var sub: String
    @Option(help: "Channels or patterns (chat:*) it may read; repeat or comma-separate.") var channels: [String] = []
    @Option(help: "How long it is valid: 90s, 30m, 1h, 7d.") var ttl = "1h"
    @Option(name: [.customLong("token-secret"), .customLong("secret")], help: "The HS256 secret (--secret is the same). (HERALD_TOKEN_SECRET)") var secret: String?

    func run() throws {
        guard let secret, secret.utf8.count >= 16 else {
            throw ValidationError("give --token-secret or HERALD_TOKEN_SECRET (at least 16 bytes)")
        }
        let patterns = splitList(channels)
        for p in patterns where ChannelPattern.problem(p) != nil { throw ValidationError("\(p): \(ChannelPattern.problem(p)!)") }
        guard let seconds = Self.seconds(ttl) else { throw ValidationError("--ttl like 90s, 30m, 1h or 7d") }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let claims = TokenClaims(sub: sub, exp: UInt64(now.tv_sec) + seconds, channels: patterns)
        print(TokenVerifier(secret: secret, hmac: LibCrypto.hmacSHA256).sign(claims))
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

