import HeraldCore
import HeraldCrypto
import HeraldOutbound
import HeraldRuntime
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Every key tokens may be signed with: the fixed ones (the shared secret, PEM files, a JWKS
/// file) and those of `--jwks-url`, which a `herald-jwks` thread fetches at start, every
/// `jwksRefreshSeconds`, and when a token names an unknown `kid` (at most once per 10 s per
/// `kid`). While the URL is down the last good set stays in use.
///
/// - Important: thread-safe; WebSocket threads and the HTTP routes read it, herald-jwks writes it.
final class ServerTokenKeys: TokenKeyStore {
    /// Asking again for a `kid` no key has waits this long (a flood of made-up kids costs one fetch per 10 s each).
    static let unknownKidRetryMillis: UInt64 = 10_000
    /// Most remembered unknown kids (older ones are forgotten first).
    static let maxRememberedKids = 4_096

    struct Fetched {
        var keys: [TokenKey] = []
        var kids: Set<String> = []
        /// When a fetch last succeeded (monotonic ms), 0: never.
        var fetchedAt: UInt64 = 0
        var lastAttemptFailed = false
        /// When a refresh was last asked for each unknown kid.
        var asked: [String: UInt64] = [:]
    }

    let fixed: [TokenKey]
    private let fixedKids: Set<String>
    let url: OutboundURL?
    private let state = Mutex(Fetched())
    let refreshes = Mailbox<Void>()
    let metrics: JWKSMetrics

    init(fixed: [TokenKey], url: OutboundURL?, metrics: JWKSMetrics) {
        self.fixed = fixed
        fixedKids = Set(fixed.compactMap(\.kid))
        self.url = url
        self.metrics = metrics
    }

    var refreshesUnknownKeys: Bool { url != nil }

    func keys(kid: String?) -> [TokenKey] {
        guard url != nil else { return StaticTokenKeys.select(fixed, kid: kid) }
        let now = monotonicMillis()
        let fetched = state.withLock { s -> [TokenKey] in
            if let kid, !s.kids.contains(kid), !fixedKids.contains(kid) {
                if now &- (s.asked[kid] ?? 0) >= Self.unknownKidRetryMillis || s.asked[kid] == nil {
                    if s.asked.count >= Self.maxRememberedKids { s.asked.removeAll() }
                    s.asked[kid] = now
                    refreshes.post(())
                }
            }
            return s.keys
        }
        return StaticTokenKeys.select(fixed + fetched, kid: kid)
    }

    /// Replaces the fetched keys (a successful fetch).
    func replace(_ keys: [TokenKey]) {
        let kids = Set(keys.compactMap(\.kid))
        state.withLock { s in
            s.keys = keys
            s.kids = kids
            s.fetchedAt = monotonicMillis()
            s.lastAttemptFailed = false
            s.asked = s.asked.filter { !kids.contains($0.key) }
        }
        metrics.keys.store(keys.count, ordering: .relaxed)
        metrics.stale.store(0, ordering: .relaxed)
    }

    func failed() {
        state.withLock { $0.lastAttemptFailed = true }
        metrics.stale.store(1, ordering: .relaxed)
    }

    var fetchedAtMillis: UInt64 { state.withLock { $0.fetchedAt } }

    /// The keys of `config` that do not come from a URL; throws a sentence for a bad file.
    static func fixedKeys(_ config: HeraldConfig) throws -> [TokenKey] {
        var keys: [TokenKey] = []
        if let secret = config.tokenSecret { keys.append(.secret(secret, hmac: LibCrypto.hmacSHA256)) }
        for path in config.tokenPublicKeyFiles {
            do {
                keys.append(try CryptoKey.publicKey(pem: readFile(path)).tokenKey(kid: nil))
            } catch {
                throw StartupError(description: "--token-public-key-file \(path): \(error)")
            }
        }
        if let path = config.jwksFile {
            switch CryptoKey.tokenKeys(jwks: try readFile(path)) {
            case let .success((found, skipped)):
                guard !found.isEmpty else { throw StartupError(description: "--jwks-file \(path): no usable key (\(skipped.joined(separator: "; ")))") }
                keys += found
            case let .failure(error):
                throw StartupError(description: "--jwks-file \(path): \(error)")
            }
        }
        return keys
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        guard let file = fopen(path, "rb") else { throw StartupError(description: "\(path): cannot open (\(String(cString: strerror(errno))))") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes += chunk[..<n]
            if bytes.count > 1 << 20 { throw StartupError(description: "\(path): larger than 1 MiB") }
        }
        return bytes
    }
}

/// What `/metrics` shows of `--jwks-url`.
final class JWKSMetrics: Sendable {
    let fetches = Counter()
    let failures = Counter()
    let keys = Atomic<Int>(0)
    /// 1 while the last fetch failed and tokens are checked against the last good set.
    let stale = Atomic<Int>(0)
    init() {}
}

/// The `herald-jwks` thread: fetches `--jwks-url` into `ServerTokenKeys`.
final class JWKSFetcher: Sendable {
    let keys: ServerTokenKeys
    let url: OutboundURL
    let config: HeraldConfig
    let logger: Logger
    let stop: StopFlag
    let client = OutboundHTTPClient(maxBodyBytes: 1 << 20, maxIdlePerOrigin: 1)

    init(keys: ServerTokenKeys, url: OutboundURL, config: HeraldConfig, logger: Logger, stop: StopFlag) {
        self.keys = keys
        self.url = url
        self.config = config
        self.logger = logger
        self.stop = stop
    }

    /// One fetch; true when it replaced the keys.
    @discardableResult
    func fetch() -> Bool {
        keys.metrics.fetches.add()
        let problem: String
        do {
            let response = try client.request(url, headers: [("Accept", "application/json")], timeoutMillis: config.jwksTimeoutSeconds * 1000)
            if response.status == 200 {
                switch CryptoKey.tokenKeys(jwks: response.body) {
                case let .success((found, skipped)):
                    for why in skipped { logger.warning("JWKS key skipped", metadata: ["url": "\(url)", "why": "\(why)"]) }
                    if !found.isEmpty {
                        keys.replace(found)
                        logger.info("JWKS loaded", metadata: ["url": "\(url)", "keys": "\(found.count)", "kids": "\(found.compactMap(\.kid).joined(separator: ","))"])
                        return true
                    }
                    problem = "no usable key in the set"
                case let .failure(error): problem = error.description
                }
            } else {
                problem = "HTTP \(response.status)"
            }
        } catch {
            problem = error.description
        }
        keys.metrics.failures.add()
        keys.failed()
        let age = keys.fetchedAtMillis
        logger.warning(age == 0 ? "JWKS fetch failed; no keys from it yet: its tokens are refused" : "JWKS fetch failed; checking tokens with the last good set (stale)",
                       metadata: ["url": "\(url)", "error": "\(problem)",
                                  "age_s": "\(age == 0 ? "-" : String((monotonicMillis() - age) / 1000))"])
        return false
    }

    /// Fetches at once, then on each refresh asked for and every `jwksRefreshSeconds`; a failed
    /// first fetch is retried every few seconds until one succeeds.
    func run() {
        var ok = fetch()
        var lastFetch = monotonicMillis()
        var wanted = false
        while !stop.isSet {
            let period = ok ? UInt64(config.jwksRefreshSeconds) * 1000 : 5_000
            if !keys.refreshes.take(timeoutMillis: 200).isEmpty { wanted = true }
            let since = monotonicMillis() - lastFetch
            // Unknown kids ask at most once a second in all, however many kinds of them come.
            if (wanted && since >= 1_000) || since >= period {
                wanted = false
                _ = keys.refreshes.drain()
                ok = fetch()
                lastFetch = monotonicMillis()
            }
        }
    }
}
