import HeraldCore
import HeraldRuntime
import HeraldWebSocket
import Synchronization

/// A counter or gauge any thread may update.
final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    init() {}
    func add(_ n: Int = 1) { value.add(n, ordering: .relaxed) }
    var current: Int { value.load(ordering: .relaxed) }
}

/// Counters and gauges for `/metrics` (Prometheus text format). Any thread may update them.
public final class Metrics: Sendable {
    let connections = Counter()
    let subscriptions = Counter()
    let connectionsTotal = Counter()
    let messagesIn = Counter()
    let duplicates = Counter()
    /// Channels started over in a new epoch because Redis was behind this node's watermark.
    let epochResets = Counter()
    let deliveries = Counter()
    let writes = Counter()
    /// Per WebSocket service thread (`--ws-threads`).
    let wsThreads: [ThreadGauges]
    let replays = Counter()
    let replayedMessages = Counter()
    let deadLettered = Counter()
    /// Dead letters by `x-herald-error` code, counted when published to `.dead`.
    let deadLetteredByReason: [EnvelopeError.Code: Counter] =
        Dictionary(uniqueKeysWithValues: EnvelopeError.Code.allCases.map { ($0, Counter()) })
    /// The latest dead letters this node sent, newest last, for the admin page.
    let recentDeadLetters = RecentDeadLetters()
    /// Messages this node sequenced per channel since the registry last took them.
    let channelActivity = ChannelActivity()
    /// Closed connections (WebSocket and SSE) by close code: the codes Herald sends and the
    /// usual peer codes, anything else as "other".
    static let closeCodes: [UInt16] = [1000, 1001, 1006, 1009, 4001, 4002, 4003, 4004, 4005, 4008]
    let closesByCode: [UInt16: Counter] = Dictionary(uniqueKeysWithValues: Metrics.closeCodes.map { ($0, Counter()) })
    let otherCloses = Counter()
    /// Presence: this node's members, the changes it announced, the changes it sequenced (as
    /// the sequencer) and the dead instances it asked to reap.
    let presenceMembers = Counter()
    let presenceAnnounced = Counter()
    let presenceChanges = Counter()
    let presenceReaps = Counter()
    let lifecycleConnections = Counter()
    let lifecycleEvents = Counter()
    let lifecycleReaps = Counter()
    let lifecycleDropped = Counter()
    let slowConsumerCloses = Counter()
    let oversizeCloses = Counter()
    /// permessage-deflate: bytes written by encoding, connections that negotiated it, and the
    /// live messages compressed once for the whole node.
    let wireBytes = WireBytes()
    let deflateConnections = Counter()
    let sharedPieces = Counter()
    let authFailures = Counter()
    /// The same refusals by `TokenError.Reason`, so an operator (and a test) can tell an expired
    /// token from a forged one.
    let authFailuresByReason: [TokenError.Reason: Counter] =
        Dictionary(uniqueKeysWithValues: TokenError.Reason.allCases.map { ($0, Counter()) })
    let httpAuthRefused = Counter()
    let jwks = JWKSMetrics()
    /// The server API: connections it closed, commands this node applied and refused, and
    /// users whose older tokens are refused.
    let serverDisconnects = Counter()
    enum ProxyResult: String, CaseIterable { case ok, refused, error }
    let connectProxy: [ProxyResult: Counter] = Dictionary(uniqueKeysWithValues: ProxyResult.allCases.map { ($0, Counter()) })
    let subscribeProxy: [ProxyResult: Counter] = Dictionary(uniqueKeysWithValues: ProxyResult.allCases.map { ($0, Counter()) })
    func countConnectProxy(_ result: ProxyResult) { connectProxy[result]?.add() }
    let subscriptionTokensRefused = Counter()
    let controlCommands: [String: Counter] = Dictionary(uniqueKeysWithValues: ServerCommand.names.map { ($0, Counter()) })
    let controlRefused = Counter()
    let revokedUsers = Atomic<Int>(0)
    let tokenExpiredCloses = Counter()
    let forbidden = Counter()
    let originRefused = Counter()
    let serverFullRefused = Counter()
    let addressFullRefused = Counter()
    let badUpgrades = Counter()
    let subscriptionLimit = Counter()
    let rateLimited = Counter()
    let deadPeers = Counter()
    let incompleteHandshakes = Counter()
    let clientErrors = Counter()
    let amqpReconnects = Counter()
    let redisReconnects = Counter()
    let redisMasterSwitches = Counter()
    let redisReplicaWaits = Counter()
    let liveGapsRepaired = Counter()
    let liveGapsUnrepaired = Counter()
    /// Live messages this node received from Redis PUB/SUB (before dropping copies it had).
    let liveReceived = Counter()
    /// Channels whose live topic this node subscribes to (a gauge).
    let liveChannels = Counter()
    let httpPublishes = Counter()
    /// Client publishes and RPCs.
    let talkBack = TalkBackMetrics()
    /// Sequencing partitions this node is the active consumer of, and those it gave up.
    let partitionsHeld = Atomic<Int>(0)
    let partitionHandoffs = Counter()
    let sequencerBatches = Counter()
    /// Latency from sequencing to the first write of a message on this node, in ms buckets.
    static let latencyBounds: [Int] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
    let latencyBuckets: [Counter] = (0...12).map { _ in Counter() }
    let latencySumMillis = Counter()
    let latencyCount = Counter()

    public init(wsThreads: Int = 1) {
        self.wsThreads = (0..<max(1, wsThreads)).map { _ in ThreadGauges() }
    }

    /// One WebSocket service thread's own gauges.
    final class ThreadGauges: Sendable {
        /// Its coalescing window (µs) and CPU share (per mille), from `CoalesceWindow`.
        let coalesceWindowMicros = Counter()
        let busyPermille = Counter()
        let connections = Counter()
    }

    func countAuthFailure(_ reason: TokenError.Reason) {
        authFailures.add()
        authFailuresByReason[reason]?.add()
    }

    /// Bumps what a state machine asked to count.
    func count(_ tally: Tally) {
        switch tally {
        case let .authFailure(reason): countAuthFailure(reason)
        case .forbidden: forbidden.add()
        case .rateLimited: rateLimited.add()
        case .subscriptionLimit: subscriptionLimit.add()
        case .clientError: clientErrors.add()
        case .subscribed: subscriptions.add()
        case let .unsubscribed(n): subscriptions.add(-n)
        case let .replay(n): replays.add(); replayedMessages.add(n)
        case .slowConsumerClose: slowConsumerCloses.add()
        case .tokenExpiredClose: tokenExpiredCloses.add()
        case .serverDisconnect: serverDisconnects.add()
        case .subscriptionTokenRefused: subscriptionTokensRefused.add()
        case let .clientPublish(code): talkBack.publishes[code]?.add()
        case let .rpc(code): talkBack.calls[code]?.add()
        }
    }

    func countClose(code: UInt16) {
        (closesByCode[code] ?? otherCloses).add()
    }

    func countDeadLetter(_ error: EnvelopeError, channel: String, messageID: String?, atMillis: UInt64) {
        deadLetteredByReason[error.code]?.add()
        recentDeadLetters.record(.init(atMillis: atMillis, channel: channel, reason: error.code.rawValue,
                                       message: error.message, messageID: messageID))
    }

    func observeLatency(millis: Int) {
        let index = Self.latencyBounds.firstIndex(where: { millis <= $0 }) ?? Self.latencyBounds.count
        latencyBuckets[index].add()
        latencySumMillis.add(millis)
        latencyCount.add()
    }

    func render(health: Health) -> String {
        var out = ""
        func line(_ name: String, _ type: String, _ help: String, _ value: Int) {
            out += "# HELP herald_\(name) \(help)\n# TYPE herald_\(name) \(type)\nherald_\(name) \(value)\n"
        }
        let g = { (c: Counter) in c.current }
        out += "# HELP herald_build_info Herald's version (always 1).\n# TYPE herald_build_info gauge\nherald_build_info{version=\"\(HeraldVersion.current)\"} 1\n"
        line("connections", "gauge", "Open WebSocket connections.", g(connections))
        line("connections_total", "counter", "WebSocket connections accepted.", g(connectionsTotal))
        line("subscriptions", "gauge", "Active channel subscriptions.", g(subscriptions))
        line("messages_in_total", "counter", "Messages sequenced and stored in Redis by this node.", g(messagesIn))
        line("duplicates_total", "counter", "Messages whose message_id was already stored (not stored again).", g(duplicates))
        line("redis_lost_writes_epoch_resets_total", "counter", "Channels started in a new epoch because Redis held fewer messages than had been handed out (it lost writes).", g(epochResets))
        line("deliveries_total", "counter", "Frames sent to WebSocket clients (history and live).", g(deliveries))
        line("writes_total", "counter", "WebSocket writes (one write may batch several frames).", g(writes))
        line("ws_threads", "gauge", "WebSocket service threads (--ws-threads).", wsThreads.count)
        func perThread(_ name: String, _ help: String, _ value: (ThreadGauges) -> String) {
            out += "# HELP herald_\(name) \(help)\n# TYPE herald_\(name) gauge\n"
            for (i, t) in wsThreads.enumerated() { out += "herald_\(name){thread=\"\(i)\"} \(value(t))\n" }
        }
        perThread("ws_coalesce_window_seconds", "A busy channel's clients get at most one write per this window; it widens as its WebSocket thread nears a full core.") {
            "\(Double(g($0.coalesceWindowMicros)) / 1e6)"
        }
        perThread("ws_thread_busy_ratio", "CPU time of the WebSocket thread over wall time, last 100 ms measured.") { "\(Double(g($0.busyPermille)) / 1e3)" }
        perThread("ws_thread_connections", "Open WebSocket connections served by the thread.") { "\(g($0.connections))" }
        line("replays_total", "counter", "Subscriptions answered with a history replay.", g(replays))
        line("replayed_messages_total", "counter", "Messages sent from history.", g(replayedMessages))
        line("dead_lettered_total", "counter", "Messages refused and sent to the dead-letter queue (counted when RabbitMQ confirmed them).", g(deadLettered))
        out += "# HELP herald_dead_letters_by_reason_total Messages published to the dead-letter queue, by their x-herald-error code.\n"
        out += "# TYPE herald_dead_letters_by_reason_total counter\n"
        for code in EnvelopeError.Code.allCases {
            out += "herald_dead_letters_by_reason_total{reason=\"\(code.rawValue)\"} \(g(deadLetteredByReason[code]!))\n"
        }
        out += "# HELP herald_connection_closes_total Closed WebSocket and SSE connections, by close code (1006: no close frame).\n"
        out += "# TYPE herald_connection_closes_total counter\n"
        for code in Self.closeCodes { out += "herald_connection_closes_total{code=\"\(code)\"} \(g(closesByCode[code]!))\n" }
        out += "herald_connection_closes_total{code=\"other\"} \(g(otherCloses))\n"
        line("presence_members", "gauge", "Members of presence channels connected to this node.", g(presenceMembers))
        line("presence_announced_total", "counter", "Merged presence changes this node published (one per channel per tick).", g(presenceAnnounced))
        line("presence_changes_total", "counter", "join and leave frames this node sequenced while it was the sequencer.", g(presenceChanges))
        line("presence_reaps_total", "counter", "Reaps this node asked for: a channel of a node instance whose lease ran out.", g(presenceReaps))
        line("lifecycle_connections", "gauge", "Connections of this node known to its lifecycle events (--lifecycle-events).", g(lifecycleConnections))
        line("lifecycle_events_total", "counter", "Lifecycle events this node published and RabbitMQ confirmed.", g(lifecycleEvents))
        line("lifecycle_reaps_total", "counter", "Node instances whose lifecycle lease ran out that this node reaped.", g(lifecycleReaps))
        line("lifecycle_dropped_total", "counter", "Lifecycle events dropped unpublished because too many waited for RabbitMQ.", g(lifecycleDropped))
        line("slow_consumer_closes_total", "counter", "Clients closed with 4008 (too far behind).", g(slowConsumerCloses))
        line("oversize_closes_total", "counter", "Clients closed with 1009 (frame over the limit).", g(oversizeCloses))
        out += "# HELP herald_ws_bytes_total WebSocket message payload bytes written, by encoding: plain, or deflate (compressed, as sent).\n"
        out += "# TYPE herald_ws_bytes_total counter\n"
        out += "herald_ws_bytes_total{encoding=\"plain\"} \(wireBytes.plain.load(ordering: .relaxed))\n"
        out += "herald_ws_bytes_total{encoding=\"deflate\"} \(wireBytes.deflated.load(ordering: .relaxed))\n"
        line("ws_deflate_input_bytes_total", "counter", "What the messages sent compressed held before compression (ratio: herald_ws_bytes_total{encoding=\"deflate\"} / this).",
             wireBytes.deflateInput.load(ordering: .relaxed))
        line("ws_deflate_connections", "gauge", "WebSocket connections that negotiated permessage-deflate.", g(deflateConnections))
        line("deflate_shared_pieces_total", "counter", "Live messages compressed once for every connection of the node.", g(sharedPieces))
        line("auth_failures_total", "counter", "Connections closed with 4001 (missing, bad or expired token) or 4004 (a kid no key has yet).", g(authFailures))
        out += "# HELP herald_auth_failures_by_reason_total Connections closed with 4001 or 4004, by why the token was refused.\n"
        out += "# TYPE herald_auth_failures_by_reason_total counter\n"
        for reason in TokenError.Reason.allCases {
            out += "herald_auth_failures_by_reason_total{reason=\"\(reason.rawValue)\"} \(g(authFailuresByReason[reason]!))\n"
        }
        line("subscription_tokens_refused_total", "counter", "Subscribes and refreshes refused with bad_subscription_token.", g(subscriptionTokensRefused))
        for (family, counters, help) in [("connect_proxy_requests_total", connectProxy, "Upgrades asked of --connect-proxy-url, by outcome (error: down, timeout, bad answer: 503)."),
                                         ("subscribe_proxy_requests_total", subscribeProxy, "Subscribes asked of a namespace's subscribe-proxy-url, by outcome.")] {
            out += "# HELP herald_\(family) \(help)\n# TYPE herald_\(family) counter\n"
            for result in ProxyResult.allCases { out += "herald_\(family){result=\"\(result.rawValue)\"} \(g(counters[result]!))\n" }
        }
        line("server_disconnects_total", "counter", "Connections closed by the server API's disconnect (4003, or 4005 with reconnect).", g(serverDisconnects))
        out += "# HELP herald_control_commands_total Server API commands this node applied (from <exchange>.control), by name.\n"
        out += "# TYPE herald_control_commands_total counter\n"
        for name in ServerCommand.names { out += "herald_control_commands_total{command=\"\(name)\"} \(g(controlCommands[name]!))\n" }
        line("control_refused_total", "counter", "Server API commands refused as malformed (HTTP 400, or AMQP messages dropped with a log line).", g(controlRefused))
        line("revoked_users", "gauge", "Users whose tokens issued before a revocation are refused.", revokedUsers.load(ordering: .relaxed))
        line("jwks_fetches_total", "counter", "Fetches of --jwks-url (at start, on schedule, and for unknown kids).", g(jwks.fetches))
        line("jwks_fetch_failures_total", "counter", "Fetches of --jwks-url that failed (unreachable, timeout, not 200, no usable key).", g(jwks.failures))
        line("jwks_keys", "gauge", "Keys of the last good --jwks-url set.", jwks.keys.load(ordering: .relaxed))
        line("jwks_stale", "gauge", "1 while the last fetch of --jwks-url failed and tokens are checked against the last good set.", jwks.stale.load(ordering: .relaxed))
        line("http_auth_refused_total", "counter", "HTTP API requests refused with 401 or 403 (missing, wrong or insufficient credentials).", g(httpAuthRefused))
        line("token_expired_closes_total", "counter", "Connections closed with 4002: their token expired while they were open.", g(tokenExpiredCloses))
        line("forbidden_total", "counter", "Subscriptions refused with forbidden (outside the token's channels).", g(forbidden))
        line("origin_refused_total", "counter", "WebSocket upgrades refused because of their Origin.", g(originRefused))
        line("server_full_refused_total", "counter", "Upgrades refused at --max-connections.", g(serverFullRefused))
        line("address_full_refused_total", "counter", "Upgrades refused at --max-connections-per-ip.", g(addressFullRefused))
        line("bad_upgrades_refused_total", "counter", "Upgrades refused as not RFC 6455 (400 bad key, 426 other version).", g(badUpgrades))
        line("subscription_limit_total", "counter", "Subscribes refused at --max-subscriptions.", g(subscriptionLimit))
        line("rate_limited_total", "counter", "Client frames dropped over --max-client-ops per second.", g(rateLimited))
        line("dead_peers_total", "counter", "Connections hung up because they stopped answering pings.", g(deadPeers))
        line("incomplete_handshakes_total", "counter", "Connections closed before a complete request (--handshake-timeout, or the peer gave up).", g(incompleteHandshakes))
        line("client_errors_total", "counter", "Error frames sent for bad client frames.", g(clientErrors))
        line("amqp_reconnects_total", "counter", "Reconnections to RabbitMQ.", g(amqpReconnects))
        line("redis_reconnects_total", "counter", "Reconnections to Redis.", g(redisReconnects))
        line("redis_master_switches_total", "counter", "Times the sentinels named another Redis master.", g(redisMasterSwitches))
        line("redis_replica_waits_total", "counter", "Batches held because fewer replicas than --redis-wait-replicas confirmed them within a second.", g(redisReplicaWaits))
        line("live_gaps_repaired_total", "counter", "Live gaps filled from Redis.", g(liveGapsRepaired))
        line("live_gaps_unrepaired_total", "counter", "Live gaps that closed clients with 4008.", g(liveGapsUnrepaired))
        line("live_messages_received_total", "counter", "Live messages this node received from Redis PUB/SUB: only those of channels its clients watch.", g(liveReceived))
        line("live_channels", "gauge", "Channels whose live topic this node subscribes to in Redis.", g(liveChannels))
        line("http_publishes_total", "counter", "Messages published through POST /api/publish.", g(httpPublishes))
        line("sequencer_batches_total", "counter", "Batches the sequencer stored and acknowledged.", g(sequencerBatches))
        line("up", "gauge", "1 when RabbitMQ and Redis are both reachable.", health.isHealthy ? 1 : 0)
        line("sequencer", "gauge", "1 when this node holds the sequencer role.", health.isSequencer ? 1 : 0)
        out += "# HELP herald_delivery_latency_seconds Time from sequencing to the first write on this node, counted once per WebSocket thread that serves the channel.\n"
        out += "# TYPE herald_delivery_latency_seconds histogram\n"
        var cumulative = 0
        for (i, bound) in Self.latencyBounds.enumerated() {
            cumulative += g(latencyBuckets[i])
            out += "herald_delivery_latency_seconds_bucket{le=\"\(Self.seconds(millis: bound))\"} \(cumulative)\n"
        }
        cumulative += g(latencyBuckets[Self.latencyBounds.count])
        out += "herald_delivery_latency_seconds_bucket{le=\"+Inf\"} \(cumulative)\n"
        out += "herald_delivery_latency_seconds_sum \(Self.seconds(millis: g(latencySumMillis)))\n"
        out += "herald_delivery_latency_seconds_count \(g(latencyCount))\n"
        talkBack.render(into: &out)
        Self.renderRedisCluster(into: &out)
        line("partitions_held", "gauge", "Sequencing partitions this node is the active consumer of (--partitions > 1).", partitionsHeld.load(ordering: .relaxed))
        line("partition_handoffs_total", "counter", "Partitions this node gave up because it held more than its share.", partitionHandoffs.current)
        return out
    }
}

extension Metrics {
    /// Milliseconds as Prometheus seconds: `0.001`, `2.5`, `10`.
    static func seconds(millis: Int) -> String {
        let whole = millis / 1000, rest = millis % 1000
        guard rest != 0 else { return "\(whole)" }
        var fraction = String(rest)
        fraction = String(repeating: "0", count: 3 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return "\(whole).\(fraction)"
    }
}

/// The latest dead letters of this node (at most `capacity`), for the admin page.
final class RecentDeadLetters: Sendable {
    struct Entry: Sendable {
        let atMillis: UInt64
        let channel: String
        let reason: String
        let message: String
        let messageID: String?
    }
    static let capacity = 20
    private let entries = Mutex<[Entry]>([])

    func record(_ entry: Entry) {
        entries.withLock { list in
            list.append(entry)
            if list.count > Self.capacity { list.removeFirst(list.count - Self.capacity) }
        }
    }

    var all: [Entry] { entries.withLock { $0 } }
}

/// Messages sequenced per channel, taken (and reset) by the node registry each heartbeat.
final class ChannelActivity: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    func add(_ channel: String, _ n: Int) {
        counts.withLock { $0[channel, default: 0] += n }
    }

    /// The counts since the last call.
    func take() -> [String: Int] {
        counts.withLock { c in
            defer { c = [:] }
            return c
        }
    }
}

/// What each thread last saw of its dependency. `/healthz` names what is down.
public final class Health: Sendable {
    let sequencerAMQP = Atomic<Bool>(false)
    let sequencerRedis = Atomic<Bool>(false)
    let readerRedis = Atomic<Bool>(false)
    let liveRedis = Atomic<Bool>(false)
    /// Bumped when the sentinels name another Redis master: every Redis link then reconnects.
    let redisMasterGeneration = Atomic<Int>(0)
    /// Monotonic ms of the last delivery on the history queue (single active consumer: only the sequencer gets any).
    let lastHistoryDelivery = Atomic<Int>(-1_000_000)

    public init() {}

    var amqpUp: Bool {
        sequencerAMQP.load(ordering: .relaxed)
    }
    var redisUp: Bool {
        sequencerRedis.load(ordering: .relaxed) && readerRedis.load(ordering: .relaxed) && liveRedis.load(ordering: .relaxed)
    }
    var isHealthy: Bool { amqpUp && redisUp }
    var isSequencer: Bool {
        amqpUp && Int(monotonicNanos() / 1_000_000) - lastHistoryDelivery.load(ordering: .relaxed) < 6_000
    }
}
