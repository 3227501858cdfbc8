import ArgumentParser
import HeraldCore
import HeraldRuntime
import HeraldServer
import HeraldServiceLoop
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Every option of `serve` also reads `HERALD_<OPTION>` (see `EnvironmentOptions`).
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a Herald node (WebSocket, HTTP API, sequencer).",
        discussion: "Every flag can also be set with an environment variable HERALD_<FLAG>, e.g. HERALD_AMQP_URL. A flag on the command line wins.")

    @Option(name: .customLong("config"), help: "A YAML config file (see herald config example): every option here under its long name, and namespaces. HERALD_* variables and flags override it. (HERALD_CONFIG)") var configFile: String?
    @Option(help: "Address to listen on. (HERALD_HOST)") var host = "0.0.0.0"
    @Option(help: "Port for HTTP and WebSocket. (HERALD_PORT)") var port: Int32 = 8080
    @Option(help: "RabbitMQ URL (default \(HeraldConfig.defaultAMQPURL)); repeat it with the nodes of a cluster: every connection uses the first node that answers and moves to another when its node is lost. (HERALD_AMQP_URL, comma-separated)") var amqpURL: [String] = []
    @Option(help: "Redis URL (redis://[:password@]host[:port][/db]); with --redis-sentinel only its password and database are used. (HERALD_REDIS_URL)") var redisURL = "redis://127.0.0.1:6379/0"
    @Option(help: "A Redis Sentinel (HOST:PORT); repeat for each. Herald writes to the master they name, checks its ROLE, and moves when they name another or it answers READONLY. (HERALD_REDIS_SENTINEL, comma-separated)") var redisSentinel: [String] = []
    @Option(help: "The master name the sentinels watch (sentinel monitor NAME ...). (HERALD_REDIS_MASTER)") var redisMaster = "mymaster"
    @Option(help: "Password of the sentinels, if they have one (the data nodes' is --redis-url's). (HERALD_REDIS_SENTINEL_PASSWORD)") var redisSentinelPassword: String?
    @Option(help: "A Redis Cluster node (HOST:PORT); repeat for a few. Herald reads the slot map from the first that answers, keeps one connection per master, follows MOVED and ASK, and gives every key of a channel the channel's hash tag. Not with --redis-sentinel. (HERALD_REDIS_CLUSTER, comma-separated)") var redisCluster: [String] = []
    @Option(help: "Replicas that must hold each batch (Redis WAIT; on a Redis Cluster, the replicas of each shard written) before it is broadcast and acked, so a failover loses nothing confirmed; 0: do not wait. 1 is recommended with Sentinel. (HERALD_REDIS_WAIT_REPLICAS)") var redisWaitReplicas = 0
    @Option(help: "Fanout exchange publishers send to; Herald's queues are named after it. (HERALD_EXCHANGE)") var exchange = "herald"
    @Option(help: "Channel for messages with an empty routing key. (HERALD_DEFAULT_CHANNEL)") var defaultChannel = "default"
    @Option(help: "Messages kept per channel in Redis. (HERALD_HISTORY_SIZE)") var historySize = 100
    @Option(help: "Prefix of Herald's Redis keys. (HERALD_REDIS_PREFIX)") var redisPrefix = "herald"
    @Option(help: "Largest accepted message body in bytes. (HERALD_MAX_MESSAGE_BYTES)") var maxMessageBytes = 65_536
    @Option(help: "Largest client WebSocket message in bytes; larger closes with 1009. (HERALD_MAX_CLIENT_FRAME_BYTES)") var maxClientFrameBytes = 4_096
    @Option(help: "Messages a client may fall behind before it is closed with 4008. (HERALD_CLIENT_BACKLOG)") var clientBacklog = 1_000
    @Option(help: "API key required by POST /api/publish; repeat for several (env: comma-separated). (HERALD_API_KEY)") var apiKey: [String] = []
    @Option(help: "This node's name in /healthz and logs (default: host name and pid). (HERALD_NODE_ID)") var nodeID: String?
    @Option(help: "Folder served at / (the demo page and client library). Default: <prefix>/share/herald/web-client beside an installed binary (<prefix>/bin/herald), else ./web-client. (HERALD_WEB_ROOT)") var webRoot: String?
    @Option(help: "Seconds a message_id is remembered for de-duplication. (HERALD_DEDUPE_SECONDS)") var dedupeSeconds = 86_400
    @Option(help: "Seconds a channel's history is kept after its last message; 0: until trimmed by --history-size. (HERALD_HISTORY_TTL)") var historyTtl = 7 * 86_400
    @Option(help: "Seconds a channel's epoch and newest seq are kept after its last message or subscribe, so resuming clients learn how many they missed; 0: forever. At least --history-ttl. (HERALD_HISTORY_META_TTL)") var historyMetaTtl = 90 * 86_400
    @Option(help: "Seconds the Redis key of a channel that never had a message outlives its last subscriber (nodes extend it while anyone is subscribed), so subscribes to names that never get a message leave nothing lasting. (HERALD_EMPTY_CHANNEL_TTL)") var emptyChannelTtl = 300
    @Option(help: "Most WebSocket connections at once. (HERALD_MAX_CONNECTIONS)") var maxConnections = 100_000
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical. (HERALD_LOG_LEVEL)") var logLevel = "info"
    @Option(help: "Log lines as text, or json: one object a line with node, channel, conn, code and the rest as fields. (HERALD_LOG_FORMAT)") var logFormat = "text"
    @Option(help: "Secret for HS256 connection tokens (?token= or {\"op\":\"auth\"}); use the environment, not the command line. (HERALD_TOKEN_SECRET)") var tokenSecret: String?
    @Option(help: "An identity provider's public key or certificate (PEM) that verifies RS256/384/512, PS256, ES256/384 or EdDSA tokens; the key decides the algorithm. Repeat for several. (HERALD_TOKEN_PUBLIC_KEY_FILE, comma-separated)") var tokenPublicKeyFile: [String] = []
    @Option(help: "A JSON Web Key Set file (RFC 7517) whose keys verify tokens by kid. (HERALD_JWKS_FILE)") var jwksFile: String?
    @Option(help: "A JSON Web Key Set URL (http or https, e.g. https://idp.example.com/.well-known/jwks.json): fetched at start, every --jwks-refresh seconds and when a token names an unknown kid (at most once per 10 s per kid); the last good set is used while it is down. (HERALD_JWKS_URL)") var jwksUrl: String?
    @Option(help: "Seconds a JWKS fetch may take. (HERALD_JWKS_TIMEOUT)") var jwksTimeout = 5
    @Option(help: "Seconds between scheduled fetches of --jwks-url. (HERALD_JWKS_REFRESH)") var jwksRefresh = 3_600
    @Option(help: "Tokens must carry this iss. Default: not checked. (HERALD_TOKEN_ISSUER)") var tokenIssuer: String?
    @Option(help: "Tokens must name this in aud (a string or a list). Default: not checked. (HERALD_TOKEN_AUDIENCE)") var tokenAudience: String?
    @Option(help: "Seconds of clock skew allowed on exp and nbf. (HERALD_TOKEN_LEEWAY)") var tokenLeeway = 5
    @Option(help: "The claim holding a token's channel patterns, e.g. https://example.com/channels for an IdP's namespaced custom claim. (HERALD_TOKEN_CHANNELS_CLAIM)") var tokenChannelsClaim = TokenRules.defaultChannelsClaim
    @Option(help: "Ask the application at each WebSocket upgrade and SSE request who the client is: Herald POSTs {transport, remote_addr, path, query, cookies, headers} and takes {user, channels, expire_at, info} from a 200; 401/403 refuses the upgrade; down or slow refuses it with 503 (clients retry). (HERALD_CONNECT_PROXY_URL)") var connectProxyUrl: String?
    @Option(help: "Seconds the connect proxy may take to answer. (HERALD_CONNECT_PROXY_TIMEOUT)") var connectProxyTimeout = 5
    @Option(help: "Request headers forwarded to the connect proxy (cookies always go, parsed); repeat. Default: authorization, origin, user-agent. (HERALD_CONNECT_PROXY_HEADER, comma-separated)") var connectProxyHeader: [String] = []
    @Option(help: "How a WebSocket the connect proxy refuses (401/403) is told: status (the upgrade is refused with that HTTP status, which a browser cannot read) or close (the upgrade completes, then closes with 4001 for 401 or 4003 for 403, which the web client does not retry). SSE gets the status either way. (HERALD_CONNECT_PROXY_REFUSAL)") var connectProxyRefusal = "status"
    @Option(help: "Calls to the connect proxy at once (its connection pool); more wait, and past 1024 waiting an upgrade is refused with 503. (HERALD_CONNECT_PROXY_CONCURRENCY)") var connectProxyConcurrency = 8
    @Option(help: "Seconds a revocation (POST /api/disconnect with \"revoke\": true) lasts unless it names revoke_until: tokens of the user issued before it are refused this long. Set it to at least your longest token lifetime. (HERALD_REVOKE_SECONDS)") var revokeSeconds = 86_400
    @Option(help: "Channel patterns readable without a token (chat:* or a name); repeat. Default: all without token keys, none with them. (HERALD_ANONYMOUS_CHANNELS, comma-separated)") var anonymousChannels: [String] = []
    @Option(help: "Channel patterns with presence (room:* or a name); repeat. Their subscribers are members, listed to subscribers that ask with \"presence\": true and at GET /api/presence/{channel}. Default: none. (HERALD_PRESENCE_CHANNELS, comma-separated)") var presenceChannels: [String] = []
    @Option(help: "Milliseconds a node's presence lease lasts without renewal: a node that dies has its members removed by the others this long after its last renewal. (HERALD_PRESENCE_LEASE_MS)") var presenceLeaseMs = 5_000
    @Option(help: "A node announces its members' joins and leaves at most once per this many ms, merged. (HERALD_PRESENCE_TICK_MS)") var presenceTickMs = 100
    @Option(help: "Presence changes kept per channel for resuming clients. (HERALD_PRESENCE_HISTORY)") var presenceHistory = 100
    @Flag(help: "Publish connect, disconnect, subscribe, unsubscribe, occupied, vacated and snapshot events to the durable topic exchange <exchange>.events, each numbered per node instance (PROTOCOL.md, \"Lifecycle events\"). (HERALD_LIFECYCLE_EVENTS)") var lifecycleEvents = false
    @Option(help: "Milliseconds a node's lifecycle lease lasts without renewal: a survivor emits a dead node's disconnects and vacated channels this long after its last renewal. (HERALD_LIFECYCLE_LEASE_MS)") var lifecycleLeaseMs = 5_000
    @Option(help: "A channel is vacated this many ms after its last subscriber in the cluster left, unless one came back. (HERALD_LIFECYCLE_VACATE_MS)") var lifecycleVacateMs = 2_000
    @Option(help: "Each node publishes a snapshot of its connections this often, in ms. (HERALD_LIFECYCLE_SNAPSHOT_MS)") var lifecycleSnapshotMs = 30_000
    @Option(help: "Who may publish from a WebSocket ({\"op\":\"publish\"}) to channels whose namespace has no client-publish: false (nobody), subscribers (connections subscribed to the channel), token (the token's publish claim names it) or backend (connections that may read it; the message goes to <exchange>.inbound for the application's worker). (HERALD_CLIENT_PUBLISH)") var clientPublish = "false"
    @Option(help: "Client publishes per second per connection (bursts up to twice as many); more are refused with rate_limited. (HERALD_CLIENT_PUBLISH_RATE)") var clientPublishRate = 10.0
    @Option(help: "RPC method patterns (cart.* or a name) any connection may call with {\"op\":\"rpc\"}: published to the topic exchange <exchange>.rpc, routing key = method; a token's rpc claim adds its own. Repeat. Default: none. (HERALD_RPC_METHODS, comma-separated)") var rpcMethods: [String] = []
    @Option(help: "Seconds an RPC waits for its worker's answer (a call may ask for less with \"timeout\" in ms); then rpc_error timeout. (HERALD_RPC_TIMEOUT)") var rpcTimeout = 10.0
    @Option(help: "RPCs one connection may have waiting for an answer; more are refused with rate_limited. (HERALD_RPC_MAX_IN_FLIGHT)") var rpcMaxInFlight = 32
    @Option(help: "Origin allowed to open a WebSocket, e.g. https://app.example.com; repeat. Default: any. (HERALD_ALLOWED_ORIGIN, comma-separated)") var allowedOrigin: [String] = []
    @Option(help: "Subscriptions one connection may hold. (HERALD_MAX_SUBSCRIPTIONS)") var maxSubscriptions = 100
    @Option(help: "Client frames per second per connection (bursts up to 5x); more are dropped with a rate_limited error. (HERALD_MAX_CLIENT_OPS)") var maxClientOps = 20.0
    @Option(help: "WebSocket connections per client address; 0: no limit (behind a load balancer all clients share its address). (HERALD_MAX_CONNECTIONS_PER_IP)") var maxConnectionsPerIp = 0
    @Option(help: "Reverse proxies (addresses or CIDR ranges, e.g. 10.0.0.0/8) whose X-Forwarded-For names the client, for --max-connections-per-ip and logs; repeat. Default: none, the TCP peer is the client. (HERALD_TRUSTED_PROXIES, comma-separated)") var trustedProxies: [String] = []
    @Option(help: "Seconds a client may take to send a whole HTTP request (an upgrade, or headers and body) once it started, and its first request after connecting; past it: 408. (HERALD_HANDSHAKE_TIMEOUT)") var handshakeTimeout = 10
    @OptionGroup var http: HTTPOptions
    @Option(help: "Ping a quiet connection after this many seconds; 0: never. (HERALD_PING_INTERVAL)") var pingInterval = 25
    @Option(help: "Hang up when no pong came back this many seconds after a ping. (HERALD_PONG_TIMEOUT)") var pongTimeout = 10
    @Option(help: "Compress WebSocket messages with permessage-deflate (RFC 7692) for clients that offer it (browsers do): each message is compressed once per node and the same bytes go to every such client; false: never negotiate it. (HERALD_PERMESSAGE_DEFLATE)") var permessageDeflate = true
    @Option(help: "Messages, and frames inside a coalesced batch, below this many bytes go out uncompressed: compressing them gains little and costs CPU. (HERALD_COMPRESSION_MIN_BYTES)") var compressionMinBytes = HeraldConfig.defaultCompressionMinBytes
    @Option(help: "Serve /metrics, /readyz, /livez and the admin page on this HOST:PORT (keep it internal, e.g. 127.0.0.1:9090). Default: no admin listener. (HERALD_ADMIN_LISTEN)") var adminListen: String?
    @Option(help: "Bearer token the admin page's data and the admin listener's /metrics need (Authorization: Bearer TOKEN); /livez and /readyz stay open for probes. Use HERALD_ADMIN_TOKEN or admin-token-file. (HERALD_ADMIN_TOKEN)") var adminToken: String?
    @Flag(help: "Serve /metrics on --admin-listen only: the public port answers 404 for it. (HERALD_ADMIN_ONLY_METRICS)") var adminOnlyMetrics = false
    @Option(help: ArgumentHelp("Test only: a WebSocket path that echoes every message, for protocol conformance runs. Never set it in production.", visibility: .hidden)) var testEchoPath: String?
    @Option(help: "A busy channel's clients get at most one write per window, carrying every message that arrived meanwhile; a quiet channel's messages go out at once. This is the window while the WebSocket thread has CPU to spare (0: write at once). (HERALD_COALESCE_MS)") var coalesceMs = 10.0
    @Option(help: "The widest the window may grow when the WebSocket thread nears a full core: it doubles each 100 ms above 90 % of a core and halves below 60 %, so writes get bigger instead of piling up. Default: --coalesce-ms, a fixed window (see BENCHMARKS.md for when widening pays). (HERALD_COALESCE_MAX_MS)") var coalesceMaxMs: Double?
    @Option(help: "RabbitMQ type of <exchange>.history and .dead: classic or quorum (replicated). Set at first start. (HERALD_QUEUE_TYPE)") var queueType = "classic"
    @Option(help: "Sequence channels in this many partitions, in parallel: the fanout exchange feeds a consistent-hash exchange <exchange>.partitions (RabbitMQ plugin rabbitmq_consistent_hash_exchange) that spreads channels over <exchange>.history.0 … .<N-1>, each with one active consumer in the cluster. The same on every node: a node started with another count refuses to start. 1: one <exchange>.history queue. (HERALD_PARTITIONS)") var partitions = 1
    @Flag(help: "Start with a --partitions other than the cluster's: with every other node stopped and the old history queues empty, replace the old topology by the new one. (HERALD_REPARTITION)") var repartition = false
    @Option(help: "WebSocket service threads, each with its own connections (handed out round-robin by one accept thread) and its own copy of every channel it serves. Default: the number of cores, at most \(Self.maxDefaultWSThreads). (HERALD_WS_THREADS)") var wsThreads: Int?
    @Option(help: "How each WebSocket thread waits for sockets: epoll (libev; costs what is ready) or poll (lws's built-in loop; scans every connection). (HERALD_EVENT_LOOP)") var eventLoop = "epoll"

    static let maxWSThreads = 64
    static let maxDefaultWSThreads = 8

    func validate() throws {
        guard historySize >= 1 else { throw ValidationError("--history-size must be at least 1") }
        guard historyTtl >= 0, historyMetaTtl >= 0 else { throw ValidationError("--history-ttl and --history-meta-ttl must not be negative") }
        guard historyMetaTtl == 0 || (historyTtl > 0 && historyMetaTtl >= historyTtl) else {
            throw ValidationError("--history-meta-ttl must be 0 (forever) or at least --history-ttl (which must then be set): a history must not outlive its epoch")
        }
        guard (3...86_400).contains(emptyChannelTtl) else { throw ValidationError("--empty-channel-ttl must be 3 to 86400 seconds") }
        guard redisWaitReplicas >= 0 else { throw ValidationError("--redis-wait-replicas must not be negative") }
        for s in redisSentinel where HostPort.parse(s) == nil {
            throw ValidationError("--redis-sentinel \(s): expected HOST:PORT")
        }
        for s in redisCluster where ClusterNode.parse(s) == nil {
            throw ValidationError("--redis-cluster \(s): expected HOST:PORT")
        }
        guard redisCluster.isEmpty || redisSentinel.isEmpty else {
            throw ValidationError("--redis-cluster and --redis-sentinel exclude each other: a Redis Cluster promotes its own replicas")
        }
        guard redisCluster.isEmpty || !redisPrefix.contains(where: { $0 == "{" || $0 == "}" }) else {
            throw ValidationError("--redis-prefix must not contain { or } with --redis-cluster: Herald puts the hash tags in the keys itself")
        }
        guard logFormat == "text" || logFormat == "json" else { throw ValidationError("--log-format must be text or json, not \"\(logFormat)\"") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), not \"\(logLevel)\"")
        }
        guard clientBacklog >= 1 else { throw ValidationError("--client-backlog must be at least 1") }
        guard ChannelName.isValid(defaultChannel) else { throw ValidationError("--default-channel is not a valid channel name") }
        guard !exchange.isEmpty else { throw ValidationError("--exchange must not be empty") }
        guard HeraldConfig.queueTypes.contains(queueType) else { throw ValidationError("--queue-type must be classic or quorum") }
        guard (1...Self.maxWSThreads).contains(wsThreads ?? 1) else { throw ValidationError("--ws-threads must be 1 to \(Self.maxWSThreads)") }
        guard EventLoop(rawValue: eventLoop) != nil else { throw ValidationError("--event-loop must be epoll or poll") }
        for p in splitList(presenceChannels) where ChannelPattern.problem(p) != nil {
            throw ValidationError("--presence-channels \(p): \(ChannelPattern.problem(p)!)")
        }
        guard presenceLeaseMs >= 500, presenceTickMs >= 1, presenceTickMs < presenceLeaseMs, presenceHistory >= 1 else {
            throw ValidationError("--presence-lease-ms must be at least 500, --presence-tick-ms at least 1 and below the lease, --presence-history at least 1")
        }
        guard lifecycleLeaseMs >= 500, lifecycleVacateMs >= 0, lifecycleSnapshotMs >= 100 else {
            throw ValidationError("--lifecycle-lease-ms must be at least 500, --lifecycle-vacate-ms at least 0, --lifecycle-snapshot-ms at least 100")
        }
        for p in splitList(anonymousChannels) where ChannelPattern.problem(p) != nil {
            throw ValidationError("--anonymous-channels \(p): \(ChannelPattern.problem(p)!)")
        }
        guard maxSubscriptions >= 1, maxClientOps > 0, maxConnectionsPerIp >= 0, handshakeTimeout >= 1,

              (0...3600).contains(pingInterval), (1...3600).contains(pongTimeout), compressionMinBytes >= 0 else {
            throw ValidationError("limits must be positive (--ping-interval 0 turns pings off)")
        }
        if let tokenSecret, tokenSecret.utf8.count < 16 { throw ValidationError("--token-secret must be at least 16 bytes") }
        guard (0...3600).contains(tokenLeeway) else { throw ValidationError("--token-leeway must be 0 to 3600 seconds") }
        guard (1...60).contains(jwksTimeout), jwksRefresh >= 10 else { throw ValidationError("--jwks-timeout must be 1 to 60 seconds and --jwks-refresh at least 10") }
        if let jwksUrl, !(jwksUrl.hasPrefix("https://") || jwksUrl.hasPrefix("http://")) {
            throw ValidationError("--jwks-url \(jwksUrl): expected an http:// or https:// URL")
        }
        if let connectProxyUrl, !(connectProxyUrl.hasPrefix("https://") || connectProxyUrl.hasPrefix("http://")) {
            throw ValidationError("--connect-proxy-url \(connectProxyUrl): expected an http:// or https:// URL")
        }
        guard (1...60).contains(connectProxyTimeout), (1...256).contains(connectProxyConcurrency) else {
            throw ValidationError("--connect-proxy-timeout must be 1 to 60 seconds and --connect-proxy-concurrency 1 to 256")
        }
        guard ConnectProxyRefusal(rawValue: connectProxyRefusal) != nil else {
            throw ValidationError("--connect-proxy-refusal must be status or close, not \"\(connectProxyRefusal)\"")
        }
        guard revokeSeconds >= 1 else { throw ValidationError("--revoke-seconds must be at least 1") }
        guard !tokenChannelsClaim.isEmpty else { throw ValidationError("--token-channels-claim must not be empty") }
        for p in splitList(trustedProxies) where AddressRange(p) == nil {
            throw ValidationError("--trusted-proxies \(p): not an IP address or CIDR range (10.0.0.0/8, fd00::/8)")
        }
        if let adminListen, HostPort.parse(adminListen) == nil {
            throw ValidationError("--admin-listen \(adminListen): expected HOST:PORT (e.g. 127.0.0.1:9090)")
        }
        if adminListen == nil, adminToken != nil || adminOnlyMetrics {
            throw ValidationError("--admin-token and --admin-only-metrics need --admin-listen")
        }
        if let adminToken, adminToken.utf8.count < 16 { throw ValidationError("--admin-token must be at least 16 bytes") }
        guard (1...256).contains(partitions) else { throw ValidationError("--partitions must be 1 to 256") }
        guard ClientPublishRule(rawValue: clientPublish) != nil else {
            throw ValidationError("--client-publish must be false, subscribers, token or backend, not \"\(clientPublish)\"")
        }
        guard clientPublishRate > 0, rpcTimeout >= 0.001, rpcTimeout <= 3_600, (1...10_000).contains(rpcMaxInFlight) else {
            throw ValidationError("--client-publish-rate must be positive, --rpc-timeout 0.001 to 3600 seconds, --rpc-max-in-flight 1 to 10000")
        }
        for p in splitList(rpcMethods) where TalkBack.methodPatternProblem(p) != nil {
            throw ValidationError("--rpc-methods \(p): \(TalkBack.methodPatternProblem(p)!)")
        }
        if let problem = ChannelNamespace.problem(try namespaces(), historyMetaTTLSeconds: historyMetaTtl) {
            throw ValidationError(problem)
        }
    }

    /// The config file's namespaces (none without --config).
    func namespaces() throws -> [ChannelNamespace] {
        guard let configFile else { return [] }
        do { return try ConfigFile.load(configFile).namespaces } catch { throw ValidationError(error.description) }
    }

    func run() throws {
        raiseFileLimit()
        var config = HeraldConfig()
        config.host = host
        config.port = port
        config.amqpURLs = amqpURL.isEmpty ? [HeraldConfig.defaultAMQPURL] : amqpURL
        config.redisURL = redisURL
        config.redisSentinels = redisSentinel
        config.redisClusterSeeds = redisCluster
        config.redisMaster = redisMaster
        config.redisSentinelPassword = redisSentinelPassword
        config.redisWaitReplicas = redisWaitReplicas
        config.exchange = exchange
        config.defaultChannel = defaultChannel
        config.historySize = historySize
        config.redisPrefix = redisPrefix
        config.maxMessageBytes = maxMessageBytes
        config.maxClientFrameBytes = maxClientFrameBytes
        config.clientBacklog = clientBacklog
        config.apiKeys = splitList(apiKey)
        config.nodeID = nodeID ?? defaultNodeID()
        config.webRoot = webRoot ?? Self.defaultWebRoot()
        config.dedupeSeconds = dedupeSeconds
        config.historyTTLSeconds = historyTtl
        config.historyMetaTTLSeconds = historyMetaTtl
        config.emptyChannelTTLSeconds = emptyChannelTtl
        config.maxConnections = maxConnections
        config.queueType = queueType
        config.coalesceMicros = UInt64(max(0, coalesceMs) * 1000)
        config.coalesceMaxMicros = max(config.coalesceMicros, UInt64(max(0, coalesceMaxMs ?? coalesceMs) * 1000))
        config.eventLoop = eventLoop
        config.wsThreads = wsThreads ?? min(Self.maxDefaultWSThreads, max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        config.tokenSecret = tokenSecret
        config.tokenPublicKeyFiles = splitList(tokenPublicKeyFile)
        config.revokeSeconds = revokeSeconds
        config.connectProxyURL = connectProxyUrl
        config.connectProxyTimeoutSeconds = connectProxyTimeout
        if !connectProxyHeader.isEmpty { config.connectProxyHeaders = splitList(connectProxyHeader).map { $0.lowercased() } }
        config.connectProxyConcurrency = connectProxyConcurrency
        config.connectProxyRefusal = ConnectProxyRefusal(rawValue: connectProxyRefusal) ?? .status
        config.jwksFile = jwksFile
        config.jwksURL = jwksUrl
        config.jwksTimeoutSeconds = jwksTimeout
        config.jwksRefreshSeconds = jwksRefresh
        config.tokenRules = TokenRules(issuer: tokenIssuer, audience: tokenAudience, leewaySeconds: UInt64(tokenLeeway),
                                       channelsClaim: tokenChannelsClaim)
        config.testEchoPath = testEchoPath
        config.maxSubscriptionsPerConnection = maxSubscriptions
        config.maxClientOpsPerSecond = maxClientOps
        config.clientOpsBurst = max(maxClientOps * 5, 10)
        config.maxConnectionsPerAddress = maxConnectionsPerIp
        config.handshakeTimeoutSeconds = handshakeTimeout
        http.apply(to: &config)
        config.pingIntervalSeconds = pingInterval
        config.pongTimeoutSeconds = pongTimeout
        config.permessageDeflate = permessageDeflate
        config.compressionMinBytes = compressionMinBytes
        config.anonymousChannels = anonymousChannels.isEmpty ? nil : splitList(anonymousChannels)
        config.allowedOrigins = splitList(allowedOrigin)
        config.presencePatterns = splitList(presenceChannels)
        config.presenceLeaseMillis = presenceLeaseMs
        config.presenceTickMillis = presenceTickMs
        config.presenceHistorySize = presenceHistory
        config.lifecycleEvents = lifecycleEvents
        config.lifecycleLeaseMillis = lifecycleLeaseMs
        config.lifecycleVacateMillis = lifecycleVacateMs
        config.lifecycleSnapshotMillis = lifecycleSnapshotMs
        config.instance = randomHex(bytes: 4)
        config.trustedProxies = splitList(trustedProxies).compactMap(AddressRange.init)
        config.namespaces = try namespaces()
        config.partitions = partitions
        config.repartition = repartition
        config.clientPublish = ClientPublishRule(rawValue: clientPublish)!  // checked in validate()
        config.clientPublishRate = clientPublishRate
        config.rpcMethods = splitList(rpcMethods)
        config.rpcTimeoutMillis = UInt64((rpcTimeout * 1000).rounded())
        config.rpcMaxInFlight = rpcMaxInFlight
        if let adminListen, let (host, port) = HostPort.parse(adminListen) {
            config.adminHost = host
            config.adminPort = port
        }
        config.adminToken = adminToken
        config.adminOnlyMetrics = adminOnlyMetrics
        let level = Logger.Level(rawValue: logLevel)!  // checked in validate()
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json {
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "herald")
        var st = stat()
        if stat(config.webRoot + "/herald.js", &st) != 0 {
            logger.warning("no herald.js in the web root: / and /herald.js answer 404", metadata: ["web_root": "\(config.webRoot)"])
        }
        do {
            try Node(config: config, logger: logger).run()
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
    }

    /// The web client an install put beside the binary (`<prefix>/bin/herald` serves
    /// `<prefix>/share/herald/web-client`), so `/herald.js` does not depend on the working
    /// directory; a build tree or checkout falls back to `./web-client`.
    static func defaultWebRoot() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if n > 0 {
            let exe = String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let bin = exe.split(separator: "/", omittingEmptySubsequences: false).dropLast()
            let installed = (bin.dropLast() + ["share", "herald", "web-client"]).joined(separator: "/")
            var st = stat()
            if stat(installed + "/herald.js", &st) == 0 { return installed }
        }
        return "web-client"
    }

    func defaultNodeID() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        let name = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(name)-\(getpid())"
    }
}

