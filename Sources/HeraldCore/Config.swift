/// Everything `herald serve` can be told (flags or `HERALD_*` environment variables).
public struct HeraldConfig: Sendable {
    public var host = "0.0.0.0"
    public var port: Int32 = 8080
    /// The RabbitMQ nodes (one, or the nodes of a cluster): each connection uses the first that
    /// answers and moves to another when its node is lost.
    public var amqpURLs = [HeraldConfig.defaultAMQPURL]
    public static let defaultAMQPURL = "amqp://guest:guest@127.0.0.1:5672/"
    public var redisURL = "redis://127.0.0.1:6379/0"
    /// Sentinels (`HOST:PORT`) to ask for the master named `redisMaster`; empty: `redisURL`'s
    /// host is the Redis (its password and database still apply to the master).
    public var redisSentinels: [String] = []
    public var redisMaster = "mymaster"
    public var redisSentinelPassword: String?
    /// Replicas that must hold a batch (`WAIT`) before it is broadcast and acked; 0: none.
    public var redisWaitReplicas = 0
    public var exchange = "herald"
    public var defaultChannel = "default"
    public var redisPrefix = "herald"
    public var historySize = 100
    public var maxMessageBytes = 65_536
    public var maxClientFrameBytes = 4_096
    /// How many messages a client may fall behind live before it is closed with 4008.
    public var clientBacklog = 1_000
    public var apiKeys: [String] = []
    public var nodeID = "herald"
    public var webRoot = "web-client"
    /// How long a `message_id` is remembered for de-duplication.
    public var dedupeSeconds = 86_400
    /// A channel's history expires this long after its last message (0: kept until trimmed).
    public var historyTTLSeconds = 7 * 86_400
    /// A channel's epoch and newest seq expire this long after its last message or read
    /// (0: never). At least `historyTTLSeconds`, so a resuming client is told how many messages
    /// it missed after its history expired, and a list never outlives its epoch.
    public var historyMetaTTLSeconds = 90 * 86_400
    /// Seconds the meta hash of a channel that never had a message outlives its last subscriber
    /// (nodes extend it while someone is subscribed); a message lifts it to the meta TTL.
    public var emptyChannelTTLSeconds = 300
    /// The TTL an empty channel's meta hash actually gets: never longer than the meta TTL.
    public var emptyChannelKeySeconds: Int {
        historyMetaTTLSeconds == 0 ? emptyChannelTTLSeconds : min(emptyChannelTTLSeconds, historyMetaTTLSeconds)
    }
    /// Deliveries RabbitMQ may have outstanding at the sequencer, and the largest batch.
    public var prefetch: UInt16 = 10_000
    public var batchSize = 1_000
    public var maxConnections = 100_000
    /// RabbitMQ queue type of `<exchange>.history` and `.dead`: "classic" or "quorum" (replicated;
    /// what a cluster of RabbitMQ nodes should use). Fixed when the queue is first declared.
    public var queueType = "classic"
    /// A busy channel's subscribers write at most this often (µs); a quiet channel's at once.
    /// The coalescing window's floor and ceiling (`CoalesceWindow`): it widens between them as
    /// the WebSocket thread's load rises. Equal by default (a fixed window): on the 2-core
    /// machine of BENCHMARKS.md widening cost more latency than the writes it saved.
    public var coalesceMicros: UInt64 = 10_000
    public var coalesceMaxMicros: UInt64 = 10_000
    /// The WebSocket thread's event loop: "epoll" (libev) or "poll" (lws's own).
    public var eventLoop = "epoll"
    /// WebSocket service threads (`--ws-threads`).
    public var wsThreads = 1
    /// HS256 secret for connection tokens; with no token keys at all, every channel is readable.
    public var tokenSecret: String?
    /// PEM public keys (or certificates) of an identity provider (`--token-public-key-file`).
    public var tokenPublicKeyFiles: [String] = []
    /// A JWKS document on disk (`--jwks-file`), and one fetched over HTTP(S) (`--jwks-url`).
    public var jwksFile: String?
    public var jwksURL: String?
    /// Seconds a JWKS fetch may take, and between scheduled refreshes of the URL.
    public var jwksTimeoutSeconds = 5
    public var jwksRefreshSeconds = 3_600
    /// `iss`, `aud`, clock skew and the claim holding channel patterns.
    public var tokenRules = TokenRules(leewaySeconds: 5)
    /// `--connect-proxy-url`: asked at each upgrade who the connection is; with its timeout,
    /// the headers forwarded to it and the most calls at once (its connection pool).
    public var connectProxyURL: String?
    public var connectProxyTimeoutSeconds = 5
    public var connectProxyHeaders = ["authorization", "origin", "user-agent"]
    public var connectProxyConcurrency = 8
    /// `--connect-proxy-refusal`: how a WebSocket the proxy refuses (401/403) hears of it.
    public var connectProxyRefusal = ConnectProxyRefusal.status
    /// How long a `revoke` lasts unless it says (`--revoke-seconds`): the bound of revocation.
    public var revokeSeconds = 86_400
    /// Channel patterns readable without a token; nil: all without a secret, none with one.
    public var anonymousChannels: [String]?
    /// Origins allowed to open a WebSocket (exact `scheme://host[:port]`); empty: any.
    public var allowedOrigins: [String] = []

    /// Per-connection and per-address limits (0: no limit where noted).
    public var maxSubscriptionsPerConnection = 100
    public var maxClientOpsPerSecond = 20.0
    public var clientOpsBurst = 100.0
    /// 0: no limit. Behind a load balancer every client has the balancer's address, unless the
    /// balancer is in `trustedProxies`.
    public var maxConnectionsPerAddress = 0
    /// Proxies whose `X-Forwarded-For` names the client (see `ClientAddress`); empty: none.
    public var trustedProxies: [AddressRange] = []
    /// Per-pattern options (`namespaces:` in the config file); empty: every channel follows the
    /// server-wide settings.
    public var namespaces: [ChannelNamespace] = []
    /// Also how long an HTTP request may take to arrive whole (408 past it).
    public var handshakeTimeoutSeconds = 10
    /// How long a keep-alive HTTP connection may wait for its next request.
    public var httpIdleTimeoutSeconds = 75
    /// The head and request-count bounds of every HTTP connection (the body's is `maxMessageBytes`).
    public var httpLimits = HTTPLimits()
    public var pingIntervalSeconds = 25
    public var pongTimeoutSeconds = 10
    /// Negotiate permessage-deflate (RFC 7692) with WebSocket clients that offer it.
    public var permessageDeflate = true
    /// Frames below this many bytes are not compressed (measured: see BENCHMARKS.md).
    public var compressionMinBytes = HeraldConfig.defaultCompressionMinBytes
    public static let defaultCompressionMinBytes = 128

    /// Channel patterns whose subscribers are members of the channel's presence (empty: none).
    public var presencePatterns: [String] = []
    /// How long a node's presence lease lasts without renewal: a node that dies (or loses Redis)
    /// has its members removed by the survivors this long after its last renewal.
    public var presenceLeaseMillis = 5_000
    /// A node announces its members' joins and leaves at most once per tick, merged.
    public var presenceTickMillis = 100
    /// Presence changes kept per channel for resuming clients.
    public var presenceHistorySize = 100
    /// This process's presence instance (random per start): the prefix of its client ids.
    public var instance = "0"
    public func hasPresence(_ channel: String) -> Bool {
        namespace(of: channel)?.presence ?? ChannelPattern.matches(any: presencePatterns, channel)
    }
    public func presenceMembersKey(_ channel: String) -> String { "\(controlPrefix):presence:\(channel)" }
    public var presenceLeasesKey: String { "\(controlPrefix):presence-nodes" }
    /// The set of channels a node instance has had members on (`presenceNodePrefix` + instance).
    public var presenceNodePrefix: String { "\(controlPrefix):presence-node:" }

    /// Publish connection and channel lifecycle events to `eventsExchange` (`LifecycleLedger`).
    public var lifecycleEvents = false
    /// A node whose lifecycle lease is not renewed this long is reaped by a survivor, which
    /// emits its `disconnect`s and `vacated`s.
    public var lifecycleLeaseMillis = 5_000
    /// A channel is vacated this long after its last subscriber left (unless one came back).
    public var lifecycleVacateMillis = 2_000
    /// Each node publishes a snapshot of its connections this often.
    public var lifecycleSnapshotMillis = 30_000
    public var eventsExchange: String { exchange + ".events" }
    /// The server API over AMQP: a durable topic exchange, routing key = command name.
    public var controlExchange: String { exchange + ".control" }
    /// Client publishes of `client-publish: backend` channels go here (durable topic, routing
    /// key = channel) for the application's worker.
    public var inboundExchange: String { exchange + ".inbound" }
    /// Client RPCs go here (durable topic, routing key = method).
    public var rpcExchange: String { exchange + ".rpc" }
    /// Who may publish from a WebSocket to channels whose namespace does not say (`--client-publish`).
    public var clientPublish = ClientPublishRule.off
    /// Client publishes per second per connection (bursts up to twice as many).
    public var clientPublishRate = 10.0
    /// RPC method patterns any connection may call (`--rpc-methods`); a token's `rpc` claim adds its own.
    public var rpcMethods: [String] = []
    /// The longest an RPC waits for its answer, in ms (`--rpc-timeout` seconds).
    public var rpcTimeoutMillis: UInt64 = 10_000
    /// Calls one connection may have waiting for an answer.
    public var rpcMaxInFlight = 32
    /// Whether any channel allows client publish, or any method RPC, without a token's say.
    public var talkBackEnabled: Bool {
        clientPublish != .off || !rpcMethods.isEmpty || namespaces.contains { ($0.clientPublish ?? .off) != .off }
    }
    /// Broadcasts from the control exchange wait here for one node to store them.
    public var controlBroadcastQueue: String { exchange + ".control.broadcast" }
    /// Users whose tokens issued before a revocation are refused: field user, value "before until".
    public var revokedKey: String { "\(controlPrefix):revoked" }
    public var lifecycleLeasesKey: String { "\(controlPrefix):lifecycle-nodes" }
    /// A node instance's connections (`lifecycleClientsPrefix` + instance: client → entry).
    public var lifecycleClientsPrefix: String { "\(controlPrefix):lifecycle-clients:" }
    /// The channels a node instance occupies (`lifecycleHeldPrefix` + instance).
    public var lifecycleHeldPrefix: String { "\(controlPrefix):lifecycle-held:" }
    /// Lost instances whose events are not confirmed yet, each with the live instance that
    /// claimed them ("" before anyone has): lost instance → claimer.
    public var lifecycleReapingKey: String { "\(controlPrefix):lifecycle-reaping" }
    /// The channels a lost instance was the last in, with their versions, kept until its
    /// `vacated` events are confirmed (`lifecycleVacatedPrefix` + instance: channel, version, …).
    public var lifecycleVacatedPrefix: String { "\(controlPrefix):lifecycle-vacated:" }
    /// The node instances that occupy a channel (`occupancyPrefix` + channel).
    public var occupancyPrefix: String { "\(controlPrefix):occupancy:" }
    public var occupancyVersionKey: String { "\(controlPrefix):occupancy-version" }

    /// The admin listener (`--admin-listen HOST:PORT`): metrics, health and the admin page; nil: none.
    public var adminHost: String?
    public var adminPort: Int32 = 0
    /// The Bearer token the admin page's data and `/metrics` on the admin listener need; nil: open.
    public var adminToken: String?
    /// `/metrics` only on the admin listener (the public port answers 404).
    public var adminOnlyMetrics = false
    /// The deployment's node registry: every node's heartbeat (`nodesKey` + node id, a JSON
    /// object that expires) and when each last beat (`nodesKey`, a sorted set).
    public var nodesKey: String { "\(controlPrefix):nodes" }
    public func nodeKey(_ node: String) -> String { "\(controlPrefix):node:\(node)" }
    /// A node's subscribers per channel (a hash), for `GET /api/channels`.
    public func nodeChannelsKey(_ node: String) -> String { "\(controlPrefix):node:\(node):channels" }

    /// Test only: a WebSocket path that echoes (for the protocol conformance run). Off: nil.
    public var testEchoPath: String?

    /// What a connection without a token may read.
    public var anonymousPatterns: [String] { anonymousChannels ?? (tokensEnabled ? [] : ["*"]) }
    /// Some key can verify tokens: a secret, PEM keys, a JWKS file or URL.
    public var tokensEnabled: Bool { tokenSecret != nil || !tokenPublicKeyFiles.isEmpty || jwksFile != nil || jwksURL != nil }
    public static let queueTypes = ["classic", "quorum"]

    public init() {}

    public var historyQueue: String { exchange + ".history" }
    /// Sequencing partitions (`--partitions`): with 1, `<exchange>.history` takes every
    /// message; with more, a consistent-hash exchange (`partitionExchange`) spreads channels over
    /// `<exchange>.history.0` … `.history.<N-1>`, each with its single active consumer.
    public var partitions = 1
    public var partitionExchange: String { exchange + ".partitions" }
    /// Start with a `partitions` other than the cluster's, replacing the drained old topology.
    public var repartition = false
    /// The queue each partition is sequenced from.
    public var historyQueues: [String] { partitions == 1 ? [historyQueue] : (0..<partitions).map { historyQueue(partition: $0) } }
    public func historyQueue(partition: Int) -> String { partitions == 1 ? historyQueue : "\(historyQueue).\(partition)" }
    /// Where the cluster records how many partitions it sequences in (the start-up check).
    public var partitionsKey: String { "\(controlPrefix):partitions" }
    public var deadQueue: String { exchange + ".dead" }

    /// Redis Cluster seeds (`--redis-cluster HOST:PORT`, repeatable); empty: one Redis (or the
    /// master Sentinel names).
    public var redisClusterSeeds: [String] = []
    public var redisCluster: Bool { !redisClusterSeeds.isEmpty }
    /// The prefix of the keys the whole deployment shares (node registry, presence and lifecycle
    /// state, revocations, the partition count). On a Redis Cluster it is a hash tag of its
    /// own, `{herald}`, so that the scripts that touch several of them run on one shard; on one
    /// Redis it is the plain prefix (the keys existing deployments have).
    public var controlPrefix: String { redisCluster ? "{\(redisPrefix)}" : redisPrefix }
    /// A channel's key of `kind` (history, meta, id, live). On a Redis Cluster the channel is
    /// the key's hash tag, `herald:history:{room}`, so every key of a channel (and its live
    /// topic) is on one shard and its store script runs there; a presence stream's keys carry
    /// the control tag instead, beside the member hashes and leases its script also writes.
    public func channelKey(_ kind: String, _ channel: String) -> String {
        guard redisCluster else { return "\(redisPrefix):\(kind):\(channel)" }
        if PresenceStream.channel(of: channel) != nil { return "\(controlPrefix):\(kind):\(channel)" }
        return "\(redisPrefix):\(kind):{\(channel)}"
    }
    public func historyKey(_ channel: String) -> String { channelKey("history", channel) }
    public func metaKey(_ channel: String) -> String { channelKey("meta", channel) }
    /// The Redis PUB/SUB channel live messages of `channel` travel on (a shard channel on a
    /// Redis Cluster). The scripts that store a message publish it there; a node subscribes to
    /// the channels its clients watch.
    public func liveTopic(_ channel: String) -> String { channelKey("live", channel) }
    /// `liveTopic(channel)` is `liveTopicHead + channel + liveTopicTail` for every channel that
    /// is not a presence stream.
    public var liveTopicHead: String { redisCluster ? "\(redisPrefix):live:{" : "\(redisPrefix):live:" }
    public var liveTopicTail: String { redisCluster ? "}" : "" }
    /// PUBLISH, or SPUBLISH on a Redis Cluster (the message goes only to the shard of its topic).
    public var livePublish: String { redisCluster ? "SPUBLISH" : "PUBLISH" }
    /// `channels` in batches of at most `size` whose keys one script call may take together:
    /// any channels on one Redis, only channels of one hash slot on a Redis Cluster.
    public func keyBatches(_ channels: [String], size: Int) -> [[String]] {
        var perSlot: [Int: [String]] = [:]
        var order: [Int] = []
        for channel in channels {
            let slot = redisCluster ? ClusterSlot.of(metaKey(channel)) : 0
            if perSlot[slot] == nil { order.append(slot) }
            perSlot[slot, default: []].append(channel)
        }
        return order.flatMap { slot in
            let list = perSlot[slot]!
            return stride(from: 0, to: list.count, by: size).map { Array(list[$0..<min($0 + size, list.count)]) }
        }
    }

    /// The channel a live topic is of (nil: not one of Herald's).
    public func channel(ofLiveTopic topic: String) -> String? {
        for head in [liveTopicHead, "\(controlPrefix):live:"] where topic.hasPrefix(head) {
            var rest = topic.dropFirst(head.count)
            if head == liveTopicHead && redisCluster {
                guard rest.hasSuffix("}") else { return nil }
                rest = rest.dropLast()
            }
            return String(rest)
        }
        return nil
    }
    /// The de-duplication key of a message id on a channel. Both are free strings that may contain
    /// `:`, so they are joined with `#`, which a channel name cannot contain: the first `#` ends
    /// the channel, and no two (channel, id) pairs share a key (`orders` + `eu:1` and
    /// `orders:eu` + `1` once did).
    public func idKey(_ channel: String, _ id: String) -> String { channelKey("id", channel) + "#" + id }
}
