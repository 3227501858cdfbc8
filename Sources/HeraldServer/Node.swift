import HeraldAMQP
import HeraldRuntime
import HeraldCore
import HeraldOutbound
import HeraldRedis
import HeraldServiceLoop
import HeraldWebSocket
import Logging
#if canImport(Glibc)
import Glibc
#endif

public struct StartupError: Error, CustomStringConvertible {
    public let description: String
}

/// One Herald node: its threads, and the order in which they stop.
///
/// - Important: created and run on the main thread, which also takes the signals.
public final class Node {
    let config: HeraldConfig
    let logger: Logger
    let metrics: Metrics
    let health = Health()

    public init(config: HeraldConfig, logger: Logger) {
        self.config = config
        self.logger = logger
        metrics = Metrics(wsThreads: config.wsThreads)
    }

    /// Runs until SIGINT or SIGTERM, then shuts down in order and returns.
    ///
    /// Shutdown: stop the sequencer (its in-flight batch is either acked after storing or left
    /// unacked for redelivery), the live subscriber, the history reader and the publisher; only
    /// then stop accepting, close every WebSocket client with 1001 and destroy the lws contexts.
    public func run() throws {
        var amqpEndpoints: [AMQPEndpoint] = []
        for url in config.amqpURLs { amqpEndpoints.append(try AMQPEndpoint(url: url)) }
        let redisEndpoint = try RedisEndpoint(url: config.redisURL)
        var sentinel: RedisSentinelConfig?
        if !config.redisSentinels.isEmpty {
            var addresses: [RedisSentinelConfig.Address] = []
            for s in config.redisSentinels { addresses.append(try RedisSentinelConfig.Address(s)) }
            sentinel = RedisSentinelConfig(sentinels: addresses, masterName: config.redisMaster, password: config.redisSentinelPassword)
        }
        if let conflict = NodeIdentity.conflict(config: config, locator: RedisLocator(data: redisEndpoint, sentinel: sentinel, cluster: config.redisClusterConfig), stop: StopFlag()) {
            throw StartupError(description: conflict)
        }
        if let conflict = Partitions.conflict(config: config, locator: RedisLocator(data: redisEndpoint, sentinel: sentinel,
                                                                                    cluster: config.redisClusterConfig),
                                              amqp: amqpEndpoints, repartition: config.repartition) {
            throw StartupError(description: conflict)
        }

        // Token keys: files are read now, so a bad one stops the start with its reason.
        var tokenKeys: ServerTokenKeys?
        if config.tokensEnabled {
            var url: OutboundURL?
            if let text = config.jwksURL {
                guard let parsed = OutboundURL(text) else { throw StartupError(description: "--jwks-url \(text): expected http:// or https:// URL") }
                url = parsed
            }
            tokenKeys = ServerTokenKeys(fixed: try ServerTokenKeys.fixedKeys(config), url: url, metrics: metrics.jwks)
        }
        var verifier = tokenKeys.map { TokenVerifier(keys: $0, rules: config.tokenRules) }

        // Signals are taken by the main thread only; block them before any thread starts.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        signal(SIGPIPE, SIG_IGN)

        var options = WebSocketServer.Options()
        options.host = config.host
        options.port = config.port
        options.maxClientMessageBytes = config.maxClientFrameBytes
        options.allowedOrigins = config.allowedOrigins
        options.trustedProxies = config.trustedProxies
        options.handshakeTimeoutSeconds = Int32(config.handshakeTimeoutSeconds)
        options.pingIntervalSeconds = UInt16(clamping: config.pingIntervalSeconds)
        options.pongTimeoutSeconds = UInt16(clamping: config.pongTimeoutSeconds)
        options.permessageDeflate = config.permessageDeflate
        options.compressionMinBytes = config.compressionMinBytes

        // One service loop, inbox and acceptor inlet per WebSocket thread.
        let threadCount = max(1, config.wsThreads)
        let eventLoop = EventLoop(rawValue: config.eventLoop) ?? .epoll
        let loops = (0..<threadCount).map { _ in ServiceLoop(kind: eventLoop) }
        let hubs = HubInboxes(loops.map { loop in HubInbox(wake: { loop.wakeUp() }) })
        // Herald's HTTP front: every request read with its own framing, bounded by these.
        var front = Acceptor.Options()
        front.limits = config.httpLimits
        front.limits.maxBodyBytes = config.maxMessageBytes
        front.requestTimeoutSeconds = config.handshakeTimeoutSeconds
        front.idleTimeoutSeconds = config.httpIdleTimeoutSeconds
        front.eventStreamPath = options.eventStreamPath
        front.trustedProxies = config.trustedProxies
        var adminFront = front
        adminFront.isAdmin = true
        adminFront.eventStreamPath = nil
        let admission = Admission(maxConnections: config.maxConnections, maxPerAddress: config.maxConnectionsPerAddress)

        let workerStop = StopFlag()
        let watermarks = Watermarks()
        func worker<W: Worker>(_ type: W.Type) -> W {
            W(config: config, amqp: amqpEndpoints, redis: redisEndpoint, sentinel: sentinel, hubs: hubs, health: health, metrics: metrics,
              logger: logger, stop: workerStop, watermarks: watermarks)
        }
        let reader = worker(HistoryReader.self)
        let live = worker(LiveSubscriber.self)
        live.historyReader = reader
        let publisher = worker(Publisher.self)
        let control = worker(ControlWorker.self)
        control.publisher = publisher
        verifier?.revocations = control.revocations
        // HTTP publishes and server API commands go from the front straight to the worker that
        // checks and answers them.
        front.diversions = [Acceptor.Diversion(method: "POST", pathPrefix: "/api/publish/") { publisher.take($0) },
                            Acceptor.Diversion(method: "POST", pathPrefix: "/api/broadcast") { publisher.takeBroadcast($0) }]
            + ["disconnect", "subscribe", "unsubscribe"].map { name in
                Acceptor.Diversion(method: "POST", pathPrefix: "/api/" + name) { control.take($0) }
            }
        // With a connect proxy, every upgrade is asked about first.
        var proxy: ConnectProxy?
        if config.connectProxyURL != nil || config.namespaces.contains(where: { $0.subscribeProxyURL != nil }) {
            var url: OutboundURL?
            if let text = config.connectProxyURL {
                guard let parsed = OutboundURL(text) else { throw StartupError(description: "--connect-proxy-url \(text): expected an http:// or https:// URL") }
                url = parsed
            }
            var subscribeURLs: [String: OutboundURL] = [:]
            for namespace in config.namespaces {
                guard let text = namespace.subscribeProxyURL else { continue }
                guard let parsed = OutboundURL(text) else {
                    throw StartupError(description: "namespace \(namespace.name): subscribe-proxy-url \(text) is not a usable http:// or https:// URL")
                }
                subscribeURLs[text] = parsed
            }
            let p = ConnectProxy(url: url, subscribeURLs: subscribeURLs, hubs: hubs, config: config, metrics: metrics, logger: logger)
            if url != nil { front.screen = { p.screen($0) } }
            proxy = p
        }
        let acceptor: Acceptor
        do {
            acceptor = try Acceptor(host: config.host, port: config.port,
                                    inlets: loops.map { loop in Acceptor.Inlet(wake: { loop.wakeUp() }) }, options: front)
        } catch {
            throw StartupError(description: error.description)
        }
        let presence = config.anyPresence ? worker(PresenceWorker.self) : nil
        let lifecycle = config.lifecycleEvents ? worker(LifecycleWorker.self) : nil
        // Client publish and RPC: only when something may use them (a token may grant either).
        let talkBack = config.talkBackEnabled || verifier != nil ? worker(TalkBackWorker.self) : nil
        let registry = worker(NodeRegistry.self)
        // The admin listener has its own socket and accept thread; WebSocket thread 0 serves it.
        var adminAcceptor: Acceptor?
        if let host = config.adminHost {
            do {
                adminAcceptor = try Acceptor(host: host, port: config.adminPort, inlets: [Acceptor.Inlet(wake: { loops[0].wakeUp() })],
                                             options: adminFront, backlog: 128, name: "herald-admin")
            } catch {
                acceptor.close()
                throw StartupError(description: "admin listener: \(error.description)")
            }
        }
        var servers: [WebSocketServer] = []
        var serviceThreads: [OSThread] = []
        // The hubs are held here: each server holds its delegate weakly.
        var hubList: [Hub] = []
        defer { withExtendedLifetime(hubList) {} }
        for i in 0..<threadCount {
            let hub = Hub(config: config, metrics: metrics, health: health, logger: logger, index: i, inbox: hubs.all[i], verifier: verifier,
                          reader: reader, live: live, publisher: publisher, presence: presence, lifecycle: lifecycle, registry: registry)
            let server = WebSocketServer(options: options, loop: loops[i], inlet: acceptor.inlets[i], admission: admission,
                                         thread: i, threads: threadCount, delegate: hub)
            server.wireBytes = metrics.wireBytes
            if let path = config.testEchoPath {
                server.addEndpoint(path: path, handler: EchoEndpoint(), maxMessageBytes: EchoEndpoint.maxMessageBytes)
            }
            hub.server = server
            hub.proxy = proxy
            hub.talkBack = talkBack
            if i == 0 { server.adminInlet = adminAcceptor?.inlets[0] }
            hubList.append(hub)
            servers.append(server)

            // Each lws context is created on its own thread; wait until it runs (or fails).
            let started = Mailbox<String?>()
            serviceThreads.append(OSThread(name: threadCount == 1 ? "herald-ws" : "herald-ws-\(i)") {
                do {
                    try server.start()
                    started.post(nil)
                    server.run()
                } catch {
                    started.post("\(error)")
                }
            })
            if let failure = started.take(timeoutMillis: 10_000).first ?? "lws did not start" {
                for s in servers { s.requestStop() }
                for t in serviceThreads { t.join() }
                acceptor.close()
                adminAcceptor?.close()
                throw StartupError(description: failure)
            }
        }
        acceptor.start()
        adminAcceptor?.start()
        logger.info("listening", metadata: ["host": "\(config.host)", "port": "\(config.port)", "node": "\(config.nodeID)",
                                            "exchange": "\(config.exchange)", "event_loop": "\(eventLoop.rawValue)",
                                            "ws_threads": "\(threadCount)"])
        logAccessPolicy()
        if let host = config.adminHost {
            if config.adminToken == nil {
                logger.warning("the admin listener has no --admin-token: anyone who reaches it sees the deployment and its metrics",
                               metadata: ["admin": "\(host):\(config.adminPort)"])
            } else {
                logger.info("admin listener", metadata: ["admin": "\(host):\(config.adminPort)", "metrics_on_public_port": "\(!config.adminOnlyMetrics)"])
            }
        }

        let ledger = config.partitions > 1 ? PartitionLedger(partitions: config.partitions, metrics: metrics) : nil
        registry.ledger = ledger
        let sequencers = (0..<config.partitions).map { p in
            let s = worker(Sequencer.self)
            s.partition = p
            s.ledger = ledger
            return s
        }
        let watcher = worker(SentinelWatcher.self)
        let fetcher = tokenKeys.flatMap { keys in keys.url.map { JWKSFetcher(keys: keys, url: $0, config: config, logger: logger, stop: workerStop) } }
        let threads = (sentinel == nil ? [] : [OSThread(name: "herald-sentinel") { watcher.run() }])
          + (fetcher.map { f in [OSThread(name: "herald-jwks") { f.run() }] } ?? [])
          + (proxy.map { p in (0..<config.connectProxyConcurrency).map { i in OSThread(name: "herald-proxy-\(i)") { p.run(stop: workerStop) } } } ?? []) + [
            OSThread(name: "herald-live") { live.run() },
            OSThread(name: "herald-history") { reader.run() },
            OSThread(name: "herald-publish") { publisher.run() },
            OSThread(name: "herald-control") { control.run() },

            OSThread(name: "herald-registry") { registry.run() },
        ] + (presence.map { p in [OSThread(name: "herald-presence") { p.run() }] } ?? [])
          + (lifecycle.map { l in [OSThread(name: "herald-lifecycle") { l.run() }] } ?? [])
          + (talkBack.map { t in [OSThread(name: "herald-talkback") { t.run() }] } ?? [])
          + sequencers.map { s in OSThread(name: config.partitions == 1 ? "herald-seq" : "herald-seq-\(s.partition)") { s.run() } }

        var received: Int32 = 0
        var timeout = timespec(tv_sec: 1, tv_nsec: 0)
        while true {
            let s = sigtimedwait(&signals, nil, &timeout)
            if s == SIGINT || s == SIGTERM { received = s; break }
        }
        logger.info("shutting down", metadata: ["signal": "\(received == SIGINT ? "SIGINT" : "SIGTERM")"])
        workerStop.set()
        for t in threads { t.join() }
        acceptor.stop()
        adminAcceptor?.stop()
        for s in servers { s.requestStop() }
        for t in serviceThreads { t.join() }
        acceptor.close()
        adminAcceptor?.close()
        logger.info("stopped")
    }
}

extension Node {
    /// Says at start-up who may read and publish, so an open door is never a surprise.
    func logAccessPolicy() {
        let readers = config.readingIsProtected
            ? "channels outside --anonymous-channels need a token or an API key"
            : "every channel is readable by anyone who reaches this port"
        for namespace in config.namespaces {
            logger.info("namespace", metadata: [
                "namespace": "\(namespace.name)", "patterns": "\(namespace.patterns.joined(separator: ","))",
                "history_size": "\(namespace.historySize.map(String.init) ?? "server")",
                "anonymous": "\(namespace.anonymous.map(String.init) ?? "server")",
                "http_publish": "\(namespace.httpPublish == false ? "off" : namespace.publishKeys != nil ? "its own keys" : "server")"])
        }
        if !config.apiKeys.isEmpty {
            logger.info("access", metadata: ["read": "\(readers)", "http_publish": "needs an API key"])
        } else if config.readingIsProtected {
            logger.warning("HTTP publishing is refused (401): reading is protected but no --api-key is set; set --api-key to publish over HTTP",
                           metadata: ["read": "\(readers)"])
        } else {
            logger.warning("OPEN: no token keys (--token-secret, --jwks-url, ...) and no --api-key, so anyone who reaches this port reads every channel and publishes over HTTP; fine for a demo, not for production",
                           metadata: ["host": "\(config.host)", "port": "\(config.port)"])
        }
    }
}
