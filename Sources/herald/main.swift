import ArgumentParser
import HeraldAMQP
import HeraldBench
import HeraldCore
import HeraldServer
import HeraldWebSocket
import Logging
#if canImport(Glibc)
import Glibc
#endif

struct Herald: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald",
        abstract: "Real-time push fan-out: RabbitMQ → capped Redis history → WebSocket clients.",
        subcommands: [Serve.self, Publish.self, Bench.self, Token.self])
}

/// Every flag of `serve` also reads `HERALD_<FLAG>` (for example `--amqp-url` / `HERALD_AMQP_URL`).
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a Herald node (WebSocket, HTTP API, sequencer).",
        discussion: "Every flag can also be set with an environment variable HERALD_<FLAG>, e.g. HERALD_AMQP_URL. A flag on the command line wins.")

    @Option(help: "Address to listen on. (HERALD_HOST)") var host = "0.0.0.0"
    @Option(help: "Port for HTTP and WebSocket. (HERALD_PORT)") var port: Int32 = 8080
    @Option(help: "RabbitMQ URL. (HERALD_AMQP_URL)") var amqpURL = "amqp://guest:guest@127.0.0.1:5672/"
    @Option(help: "Redis URL. (HERALD_REDIS_URL)") var redisURL = "redis://127.0.0.1:6379/0"
    @Option(help: "Fanout exchange publishers send to; Herald's queues are named after it. (HERALD_EXCHANGE)") var exchange = "herald"
    @Option(help: "Channel for messages with an empty routing key. (HERALD_DEFAULT_CHANNEL)") var defaultChannel = "default"
    @Option(help: "Messages kept per channel in Redis. (HERALD_HISTORY_SIZE)") var historySize = 100
    @Option(help: "Prefix of Herald's Redis keys. (HERALD_REDIS_PREFIX)") var redisPrefix = "herald"
    @Option(help: "Largest accepted message body in bytes. (HERALD_MAX_MESSAGE_BYTES)") var maxMessageBytes = 65_536
    @Option(help: "Largest client WebSocket message in bytes; larger closes with 1009. (HERALD_MAX_CLIENT_FRAME_BYTES)") var maxClientFrameBytes = 4_096
    @Option(help: "Messages a client may fall behind before it is closed with 4008. (HERALD_CLIENT_BACKLOG)") var clientBacklog = 1_000
    @Option(help: "API key required by POST /api/publish; repeat for several (env: comma-separated). (HERALD_API_KEY)") var apiKey: [String] = []
    @Option(help: "This node's name in /healthz and logs (default: host name and pid). (HERALD_NODE_ID)") var nodeID: String?
    @Option(help: "Folder served at / (the demo page and client library). (HERALD_WEB_ROOT)") var webRoot = "web-client"
    @Option(help: "Seconds a message_id is remembered for de-duplication. (HERALD_DEDUPE_SECONDS)") var dedupeSeconds = 86_400
    @Option(help: "Seconds a channel's history is kept after its last message; 0: until trimmed by --history-size. (HERALD_HISTORY_TTL)") var historyTtl = 7 * 86_400
    @Option(help: "Seconds a channel's epoch and newest seq are kept after its last message or subscribe, so resuming clients learn how many they missed; 0: forever. At least --history-ttl. (HERALD_HISTORY_META_TTL)") var historyMetaTtl = 90 * 86_400
    @Option(help: "Most WebSocket connections at once. (HERALD_MAX_CONNECTIONS)") var maxConnections = 100_000
    @Option(help: "Log level: trace, debug, info, warning, error. (HERALD_LOG_LEVEL)") var logLevel = "info"
    @Option(help: "Secret for HS256 connection tokens (?token= or {\"op\":\"auth\"}); use the environment, not the command line. (HERALD_TOKEN_SECRET)") var tokenSecret: String?
    @Option(help: "Channel patterns readable without a token (chat:* or a name); repeat. Default: all without --token-secret, none with it. (HERALD_ANONYMOUS_CHANNELS, comma-separated)") var anonymousChannels: [String] = []
    @Option(help: "Origin allowed to open a WebSocket, e.g. https://app.example.com; repeat. Default: any. (HERALD_ALLOWED_ORIGIN, comma-separated)") var allowedOrigin: [String] = []
    @Option(help: "Subscriptions one connection may hold. (HERALD_MAX_SUBSCRIPTIONS)") var maxSubscriptions = 100
    @Option(help: "Client frames per second per connection (bursts up to 5x); more are dropped with a rate_limited error. (HERALD_MAX_CLIENT_OPS)") var maxClientOps = 20.0
    @Option(help: "WebSocket connections per client address; 0: no limit (behind a load balancer all clients share its address). (HERALD_MAX_CONNECTIONS_PER_IP)") var maxConnectionsPerIp = 0
    @Option(help: "Reverse proxies (addresses or CIDR ranges, e.g. 10.0.0.0/8) whose X-Forwarded-For names the client, for --max-connections-per-ip and logs; repeat. Default: none, the TCP peer is the client. (HERALD_TRUSTED_PROXIES, comma-separated)") var trustedProxies: [String] = []
    @Option(help: "Seconds a client may take to complete the HTTP upgrade. (HERALD_HANDSHAKE_TIMEOUT)") var handshakeTimeout = 10
    @Option(help: "Ping a quiet connection after this many seconds; 0: never. (HERALD_PING_INTERVAL)") var pingInterval = 25
    @Option(help: "Hang up when no pong came back this many seconds after a ping. (HERALD_PONG_TIMEOUT)") var pongTimeout = 10
    @Option(help: ArgumentHelp("Test only: a WebSocket path that echoes every message, for protocol conformance runs. Never set it in production.", visibility: .hidden)) var testEchoPath: String?
    @Option(help: "A busy channel's clients get at most one write per this many ms, carrying every message that arrived meanwhile; a quiet channel's messages go out at once. 0 writes at once always. (HERALD_COALESCE_MS)") var coalesceMs = 10.0
    @Option(help: "RabbitMQ type of <exchange>.history and .dead: classic or quorum (replicated). Set at first start. (HERALD_QUEUE_TYPE)") var queueType = "classic"
    @Option(help: "How the WebSocket thread waits for sockets: epoll (libev; costs what is ready) or poll (lws's built-in loop; scans every connection). (HERALD_EVENT_LOOP)") var eventLoop = "epoll"

    func validate() throws {
        guard historySize >= 1 else { throw ValidationError("--history-size must be at least 1") }
        guard historyTtl >= 0, historyMetaTtl >= 0 else { throw ValidationError("--history-ttl and --history-meta-ttl must not be negative") }
        guard historyMetaTtl == 0 || (historyTtl > 0 && historyMetaTtl >= historyTtl) else {
            throw ValidationError("--history-meta-ttl must be 0 (forever) or at least --history-ttl (which must then be set): a history must not outlive its epoch")
        }
        guard clientBacklog >= 1 else { throw ValidationError("--client-backlog must be at least 1") }
        guard ChannelName.isValid(defaultChannel) else { throw ValidationError("--default-channel is not a valid channel name") }
        guard !exchange.isEmpty else { throw ValidationError("--exchange must not be empty") }
        guard HeraldConfig.queueTypes.contains(queueType) else { throw ValidationError("--queue-type must be classic or quorum") }
        guard EventLoop(rawValue: eventLoop) != nil else { throw ValidationError("--event-loop must be epoll or poll") }
        for p in splitList(anonymousChannels) where ChannelPattern.problem(p) != nil {
            throw ValidationError("--anonymous-channels \(p): \(ChannelPattern.problem(p)!)")
        }
        guard maxSubscriptions >= 1, maxClientOps > 0, maxConnectionsPerIp >= 0, handshakeTimeout >= 1,
              (0...3600).contains(pingInterval), (1...3600).contains(pongTimeout) else {
            throw ValidationError("limits must be positive (--ping-interval 0 turns pings off)")
        }
        if let tokenSecret, tokenSecret.utf8.count < 16 { throw ValidationError("--token-secret must be at least 16 bytes") }
        for p in splitList(trustedProxies) where AddressRange(p) == nil {
            throw ValidationError("--trusted-proxies \(p): not an IP address or CIDR range (10.0.0.0/8, fd00::/8)")
        }
    }

    func run() throws {
        raiseFileLimit()
        var config = HeraldConfig()
        config.host = host
        config.port = port
        config.amqpURL = amqpURL
        config.redisURL = redisURL
        config.exchange = exchange
        config.defaultChannel = defaultChannel
        config.historySize = historySize
        config.redisPrefix = redisPrefix
        config.maxMessageBytes = maxMessageBytes
        config.maxClientFrameBytes = maxClientFrameBytes
        config.clientBacklog = clientBacklog
        config.apiKeys = splitList(apiKey)
        config.nodeID = nodeID ?? defaultNodeID()
        config.webRoot = webRoot
        config.dedupeSeconds = dedupeSeconds
        config.historyTTLSeconds = historyTtl
        config.historyMetaTTLSeconds = historyMetaTtl
        config.maxConnections = maxConnections
        config.queueType = queueType
        config.coalesceMicros = UInt64(max(0, coalesceMs) * 1000)
        config.eventLoop = eventLoop
        config.tokenSecret = tokenSecret
        config.testEchoPath = testEchoPath
        config.maxSubscriptionsPerConnection = maxSubscriptions
        config.maxClientOpsPerSecond = maxClientOps
        config.clientOpsBurst = max(maxClientOps * 5, 10)
        config.maxConnectionsPerAddress = maxConnectionsPerIp
        config.handshakeTimeoutSeconds = handshakeTimeout
        config.pingIntervalSeconds = pingInterval
        config.pongTimeoutSeconds = pongTimeout
        config.anonymousChannels = anonymousChannels.isEmpty ? nil : splitList(anonymousChannels)
        config.allowedOrigins = splitList(allowedOrigin)
        config.trustedProxies = splitList(trustedProxies).compactMap(AddressRange.init)
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "herald")
        do {
            try Node(config: config, logger: logger).run()
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
    }

    func defaultNodeID() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        let name = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(name)-\(getpid())"
    }
}

struct Publish: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish one message to a channel through RabbitMQ, with a publisher confirm.")

    @Argument(help: "The channel (the routing key).") var channel: String
    @Argument(help: "The message; standard input when omitted.") var text: String?
    @Flag(help: "Send as application/json (the body must be valid JSON).") var json = false
    @Option(help: "The message_id (publishing the same id again is stored once).") var id: String?
    @Option(help: "RabbitMQ URL. (HERALD_AMQP_URL)") var amqpURL = "amqp://guest:guest@127.0.0.1:5672/"
    @Option(help: "The exchange. (HERALD_EXCHANGE)") var exchange = "herald"

    func run() throws {
        guard ChannelName.isValid(channel) else {
            throw ValidationError("\(ChannelName.problem(channel) ?? "bad channel")")
        }
        var body: [UInt8]
        if let text {
            body = Array(text.utf8)
        } else {
            body = []
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let n = read(0, &buffer, buffer.count)
                if n <= 0 { break }
                body.append(contentsOf: buffer[0..<n])
            }
        }
        if json {
            do { _ = try JSON.minify(body) } catch { throw ValidationError("body is not valid JSON: \(error.message)") }
        }
        let connection = AMQPConnection(endpoint: try AMQPEndpoint(url: amqpURL))
        try connection.connect()
        defer { connection.close() }
        try connection.declareExchange(exchange, type: "fanout", durable: true)
        try connection.confirmSelect()
        try connection.publish(exchange: exchange, routingKey: channel, body: body,
                               properties: AMQPProperties(contentType: json ? "application/json" : "text/plain; charset=utf-8",
                                                          messageID: id, persistent: true))
        let refused = try connection.waitForConfirms(timeoutMillis: 10_000)
        if !refused.isEmpty {
            print("RabbitMQ refused the message")
            throw ExitCode(1)
        }
        print("published to \(channel)" + (id.map { " (id \($0))" } ?? ""))
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load-test fan-out: many WebSocket clients, a paced publisher, latency and correctness.",
        discussion: """
        Presets: latency (fixed load), throughput (rising rate until loss or p99 over --p99-bound), \
        connections (idle clients; memory per connection with --server-pid), storm (history for clients \
        joining at once, then every client drops and resumes), sequencer (RabbitMQ → Redis alone: the \
        server is paused with SIGSTOP while --count messages queue, then timed as it drains them). Every message carries its send time and a \
        number; each client checks lost, duplicated and out-of-order messages. --peer drives any WebSocket \
        server that sends the published body as the message (Nchan), with --url containing {channel}.
        """)

    @Argument(help: "latency, throughput, connections, storm or sequencer.") var scenario: String = "latency"
    @Option(help: "WebSocket URL of a node (repeat for a cluster). Herald: ws://host:port/ws. Peer: with {channel}.") var url: [String] = ["ws://127.0.0.1:8080/ws"]
    @Flag(help: "Drive a peer server (Nchan): numbers and send times are read from the message body.") var peer = false
    @Option(help: "Client connections.") var clients = 1_000
    @Option(help: "Channels the clients are spread over.") var channels = 1
    @Option(help: "Connections opened per second (default: all at once).") var ramp: Int?
    @Option(help: "Messages per second (the starting rate for throughput).") var rate = 100.0
    @Option(help: "Highest rate the throughput preset tries.") var maxRate = 5_000.0
    @Option(help: "Message body size in bytes.") var size = 100
    @Option(help: "Seconds of publishing (latency; live phase of storm).") var duration = 10.0
    @Option(help: "Seconds per step of the throughput preset.") var stepSeconds = 4.0
    @Option(help: "p99 bound in ms for a clean throughput step.") var p99Bound = 50.0
    @Option(help: "Messages of history per channel before the storm.") var history = 100
    @Option(help: "RabbitMQ URL the publisher uses.") var amqpURL = "amqp://guest:guest@127.0.0.1:5672/"
    @Option(help: "Exchange the publisher sends to.") var exchange = "herald"
    @Option(help: "Publish over HTTP instead of AMQP: http://host:port/api/publish/{channel} (Nchan: its publisher location).") var publishURL: String?
    @Option(help: "API key for --publish-url.") var apiKey: String?
    @Option(help: "PID of the server, for its CPU and resident memory.") var serverPID: Int32?
    @Option(help: "Channel name prefix.") var channelPrefix = "bench"
    @Flag(help: "Print one JSON object with the results on standard output.") var json = false
    @Option(help: "Write a self-contained HTML report (latency plot, throughput over time).") var report: String?
    @Flag(help: "No progress lines.") var quiet = false
    @Option(help: "sequencer preset: messages to queue while the server is paused.") var count = 100_000
    @Option(help: "sequencer preset: how many drains of --count to measure; the result is their median.") var drains = 1
    @Option(help: "sequencer preset: the server's metrics, http://host:port/metrics.") var metricsURL: String?
    @Option(help: "The generator's WebSocket client: epoll (Herald's own, reads each frame in one copy) or lws (libwebsockets 4.1's client on poll(), which parses payload a byte at a time).") var clientEngine = "epoll"
    @Option(help: "epoll engine: read in rounds at most every this many µs, so the clients' wake-ups do not tax the server's sends on a shared machine; adds at most this to a latency. 0: wake for every ready socket.") var readRoundUs = 500

    func validate() throws {
        guard Scenario(rawValue: scenario) != nil else { throw ValidationError("scenario must be latency, throughput, connections, storm or sequencer") }
        guard clients >= 1, channels >= 1, channels <= clients else { throw ValidationError("need clients >= channels >= 1") }
        guard drains >= 1 else { throw ValidationError("--drains must be at least 1") }
        guard rate > 0, size >= 40 else { throw ValidationError("--rate must be > 0 and --size at least 40 bytes") }
        if peer { guard url.allSatisfy({ $0.contains("{channel}") }) else { throw ValidationError("--peer needs --url with {channel}") } }
        if peer && publishURL == nil { throw ValidationError("--peer needs --publish-url") }
        guard ClientEngine(rawValue: clientEngine) != nil else { throw ValidationError("--client-engine must be epoll or lws") }
    }

    func run() throws {
        var o = BenchOptions()
        o.scenario = Scenario(rawValue: scenario)!
        o.kind = peer ? .peer : .herald
        o.urls = url
        o.clients = clients
        o.channels = channels
        o.ramp = ramp
        o.rate = rate
        o.maxRate = maxRate
        o.size = size
        o.duration = duration
        o.stepSeconds = stepSeconds
        o.p99BoundMillis = p99Bound
        o.history = history
        o.route = publishURL.map { .http(url: $0, apiKey: apiKey) } ?? .amqp(url: amqpURL, exchange: exchange)
        o.serverPID = serverPID
        o.channelPrefix = channelPrefix
        o.quiet = quiet
        o.count = count
        o.drains = drains
        o.metricsURL = metricsURL
        o.engine = ClientEngine(rawValue: clientEngine)!
        o.readRoundMicros = UInt32(clamping: max(0, readRoundUs))
        raiseFileLimit()
        let result: BenchResult
        do {
            result = try BenchRunner(options: o).run()
        } catch {
            printError("herald bench: \(error)")
            throw ExitCode(1)
        }
        if let report {
            guard let f = fopen(report, "w") else { throw ValidationError("cannot write \(report)") }
            fputs(result.html(), f)
            fclose(f)
        }
        if json { print(result.json()) } else { print(result.summary()) }
    }
}

/// Repeated flags and comma-separated environment values, as one list.
func splitList(_ values: [String]) -> [String] {
    values.flatMap { $0.split(separator: ",").map { String($0).trimmingCharacters() } }.filter { !$0.isEmpty }
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}

struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a connection token (JWT, HS256) for trying Herald out.",
        discussion: "The secret comes from --secret or HERALD_TOKEN_SECRET, the same one `herald serve` uses.")

    @Option(help: "Who the token is for (the sub claim).") var sub: String
    @Option(help: "Channels or patterns (chat:*) it may read; repeat or comma-separate.") var channels: [String] = []
    @Option(help: "How long it is valid: 90s, 30m, 1h, 7d.") var ttl = "1h"
    @Option(help: "The HS256 secret. (HERALD_TOKEN_SECRET)") var secret: String?

    func run() throws {
        guard let secret = secret ?? getenv("HERALD_TOKEN_SECRET").map({ String(cString: $0) }), secret.utf8.count >= 16 else {
            throw ValidationError("give --secret or HERALD_TOKEN_SECRET (at least 16 bytes)")
        }
        let patterns = splitList(channels)
        for p in patterns where ChannelPattern.problem(p) != nil { throw ValidationError("\(p): \(ChannelPattern.problem(p)!)") }
        guard let seconds = Self.seconds(ttl) else { throw ValidationError("--ttl like 90s, 30m, 1h or 7d") }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let claims = TokenClaims(sub: sub, exp: UInt64(now.tv_sec) + seconds, channels: patterns)
        print(TokenVerifier(secret: secret).sign(claims))
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

/// 10,000 clients need 10,000 descriptors: lift the soft limit to the hard one.
func raiseFileLimit() {
    var limit = rlimit()
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 && limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}

/// Fills in flags from `HERALD_*` environment variables when they are not on the command line.
func argumentsWithEnvironment(_ arguments: [String]) -> [String] {
    guard arguments.count > 1, arguments[1] == "serve" || arguments[1] == "publish" else { return arguments }
    let flags = arguments[1] == "serve"
        ? ["host", "port", "amqp-url", "redis-url", "exchange", "default-channel", "history-size", "redis-prefix",
           "max-message-bytes", "max-client-frame-bytes", "client-backlog", "api-key", "node-id", "web-root",
           "dedupe-seconds", "max-connections", "log-level", "queue-type", "coalesce-ms", "event-loop", "token-secret",
           "anonymous-channels", "allowed-origin", "max-subscriptions", "max-client-ops", "max-connections-per-ip",
           "handshake-timeout", "ping-interval", "pong-timeout"]
        : ["amqp-url", "exchange"]
    var result = arguments
    for flag in flags {
        let present = arguments.contains { $0 == "--\(flag)" || $0.hasPrefix("--\(flag)=") }
        let variable = "HERALD_" + flag.uppercased().replacingOccurrences(of: "-", with: "_")
        guard !present, let value = getenv(variable).map({ String(cString: $0) }), !value.isEmpty else { continue }
        result.insert(contentsOf: ["--\(flag)", value], at: 2)
    }
    return result
}

extension String {
    func replacingOccurrences(of a: String, with b: String) -> String {
        split(separator: Character(a), omittingEmptySubsequences: false).joined(separator: b)
    }
}

Herald.main(Array(argumentsWithEnvironment(CommandLine.arguments).dropFirst()))
