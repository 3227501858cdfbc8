import HeraldCore
import HeraldRuntime
import HeraldWebSocket
import Logging

/// One WebSocket service thread's glue: it feeds socket callbacks and other threads' events to
/// its `FanOut` state machine and carries out the actions it returns. A node has one hub per
/// `--ws-threads`, each with its own connections, rings and coalescing window; a hub gets the
/// live messages of the channels its connections watch. Every decision (auth,
/// limits, rings, coalescing, expiry) is made in `FanOut` and `ClientSession`; HTTP goes to
/// `HTTPRoutes`.
///
/// - Important: every method runs on the service thread (lws callbacks and `wokenUp`).
final class Hub: WebSocketServerDelegate {
    let config: HeraldConfig
    let metrics: Metrics
    let logger: Logger
    let inbox: HubInbox
    /// This thread's index: the workers answer its requests in its inbox.
    let index: Int
    let gauges: Metrics.ThreadGauges
    let reader: HistoryReader
    /// Brings the live messages of the channels this thread watches; subscribes go through it.
    let live: LiveSubscriber
    let routes: HTTPRoutes
    /// The admin listener's routes (served by thread 0 only).
    let admin: AdminRoutes
    /// This node's presence announcer (nil without `--presence-channels`).
    let presence: PresenceWorker?
    /// This node's lifecycle events (nil without `--lifecycle-events`).
    let lifecycle: LifecycleWorker?
    /// Client publishes and RPCs (nil when neither is enabled: then refused as `unavailable`).
    var talkBack: TalkBackWorker?
    /// Set by the node before the service thread starts; used for the timer.
    weak var server: WebSocketServer?

    private var fanOut: FanOut
    private var window: CoalesceWindow
    private var nextWindowCheck: UInt64 = 0
    private var connections: [FanOut.ConnectionID: WebSocketConnection] = [:]

    /// Asks the application (connect and subscribe proxies), if the config names one.
    var proxy: ConnectProxy?

    init(config: HeraldConfig, metrics: Metrics, health: Health, logger: Logger, index: Int, inbox: HubInbox, verifier: TokenVerifier?,
         reader: HistoryReader, live: LiveSubscriber, publisher: Publisher, presence: PresenceWorker?, lifecycle: LifecycleWorker?, registry: NodeRegistry) {
        self.config = config
        self.metrics = metrics
        self.logger = logger
        self.index = index
        self.inbox = inbox
        gauges = metrics.wsThreads[index]
        self.reader = reader
        self.live = live
        self.presence = presence
        self.lifecycle = lifecycle
        routes = HTTPRoutes(config: config, metrics: metrics, health: health, verifier: verifier, reader: reader, publisher: publisher,
                            registry: registry, hub: index)
        admin = AdminRoutes(config: config, metrics: metrics, health: health, registry: registry)
        fanOut = FanOut(settings: FanOut.Settings(
            session: ClientSession.Policy(maxSubscriptions: config.maxSubscriptionsPerConnection,
                                          opsPerSecond: config.maxClientOpsPerSecond, opsBurst: config.clientOpsBurst,
                                          anonymousPatterns: config.anonymousPatterns, verifier: verifier,
                                          presencePatterns: config.presencePatterns, namespaces: config.namespaces,
                                          talkBack: ClientSession.TalkBackPolicy(
                                              clientPublish: config.clientPublish, publishesPerSecond: config.clientPublishRate,
                                              rpcMethods: config.rpcMethods, rpcTimeoutMillis: config.rpcTimeoutMillis,
                                              rpcMaxInFlight: config.rpcMaxInFlight, maxDataBytes: config.maxMessageBytes)),
            clientBacklog: config.clientBacklog,
            maxRingCapacity: config.largestClientBacklog + max(config.largestHistorySize, 4 * config.batchSize),
            coalesceMicros: config.coalesceMicros,
            keepAliveMicros: UInt64(max(1, config.emptyChannelKeySeconds / 3)) * 1_000_000))
        fanOut.settings.instance = config.instance
        fanOut.settings.node = config.nodeID
        fanOut.settings.lifecycle = lifecycle != nil
        window = CoalesceWindow(rule: .init(floorMicros: config.coalesceMicros, ceilingMicros: config.coalesceMaxMicros))
        gauges.coalesceWindowMicros.add(Int(config.coalesceMicros))
    }

    // MARK: Events in

    func webSocketOpened(_ connection: WebSocketConnection, query: [(String, String)]) {
        metrics.connections.add()
        metrics.connectionsTotal.add()
        gauges.connections.add()
        if connection.deflate != nil { metrics.deflateConnections.add() }
        connections[connection.id] = connection
        if let status = connection.attachment.flatMap(ConnectIdentity.refusal) {
            // Refused by the connect proxy, upgraded only to say so (--connect-proxy-refusal close).
            return handle(.opened(connection.id, query: query, refusal: status))
        }
        // Admitted by the connect proxy: its answer, as the front carried it, is the identity.
        let identity = connection.attachment.flatMap { try? ConnectIdentity.parse($0, nowSeconds: 0).get() }
        handle(.opened(connection.id, query: query, identity: identity, compresses: connection.deflate != nil))
    }

    func webSocketReceived(_ connection: WebSocketConnection, message: [UInt8], binary: Bool) {
        handle(.received(connection.id, message, binary: binary))
    }

    func webSocketWritable(_ connection: WebSocketConnection) {
        write(connection)
    }

    /// The hot path: one connection's next batch, straight from FanOut without an action list.
    private func write(_ connection: WebSocketConnection) {
        switch fanOut.writeNext(connection.id) {
        case .nothing:
            return
        case let .frames(frames, pieces, more):
            guard connection.isOpen, connection.write(frames: frames, pieces: pieces) else { return }
            metrics.writes.add()
            metrics.deliveries.add(frames.count)
            if more { connection.requestWritable() }
        case let .actions(actions):
            carryOut(actions)
        }
    }

    func webSocketClosed(_ connection: WebSocketConnection) {
        metrics.connections.add(-1)
        gauges.connections.add(-1)
        if connection.deflate != nil { metrics.deflateConnections.add(-1) }
        connections[connection.id] = nil
        metrics.countClose(code: connection.closedWith)
        handle(.closed(connection.id, code: connection.closedWith))
    }

    func wokenUp() {
        adaptWindow()
        let events = inbox.mailbox.drain()
        if events.isEmpty { return }
        var round: [FanOut.Event] = []
        round.reserveCapacity(events.count)
        for event in events {
            switch event {
            case let .live(messages): round.append(.live(messages))
            case let .broken(channel): round.append(.broken(channel: channel))
            case let .history(channel, requests, snapshot): round.append(.history(channel: channel, requests: requests, snapshot: snapshot))
            case let .httpHistory(token, result, since, limit): routes.answerHistory(token: token, result: result, since: since, limit: limit)
            case let .httpPresence(token, result): routes.answerPresence(token: token, result: result)
            case let .control(command): round.append(.control(command))
            case let .reportChannels(box): box.post(fanOut.subscriberCounts())
            case let .subscribeProxyAnswer(connection, channel, allowed):
                round.append(.subscribeProxyAnswered(connection, channel: channel, allowed: allowed))
            case let .talkBack(connection, answer):
                round.append(.talkBack(connection, answer))
            }
        }
        if !round.isEmpty { carryOut(fanOut.handle(round, now: now())) }
    }

    func timerFired() {
        adaptWindow()
        handle(.timer)
    }

    /// The coalescing window follows this thread's CPU share (`CoalesceWindow`'s rule; with a
    /// fixed window only the share is measured, for `/metrics`); the thread's CPU clock is read
    /// only once per period.
    private func adaptWindow() {
        let wall = monotonicMicros()
        guard wall >= nextWindowCheck else { return }
        nextWindowCheck = wall + window.rule.periodMicros
        let before = window.micros
        if let micros = window.observe(wallMicros: wall, cpuMicros: threadCPUMicros()) {
            fanOut.setCoalesce(micros: micros)
            gauges.coalesceWindowMicros.add(Int(micros) - Int(before))
        }
        gauges.busyPermille.add(Int(window.busy * 1000) - gauges.busyPermille.current)
    }

    func httpRequest(_ request: HTTPRequest) {
        if request.isAdmin { return admin.handle(request) }
        routes.handle(request)
    }

    func webSocketRefused(_ refusal: WebSocketRefusal) {
        switch refusal {
        case .origin: metrics.originRefused.add()
        case .serverFull: metrics.serverFullRefused.add()
        case .addressFull: metrics.addressFullRefused.add()
        case .badUpgrade: metrics.badUpgrades.add()
        }
        logger.info("refused a WebSocket upgrade", metadata: ["reason": "\(refusal)"])
    }

    func webSocketIncompleteHandshake() {
        metrics.incompleteHandshakes.add()
    }

    func webSocketTimedOut(_ connection: WebSocketConnection) {
        metrics.deadPeers.add()
        logger.info("hung up on a peer that stopped answering pings", metadata: ["conn": "\(connection.id)", "peer": "\(connection.peer)"])
    }

    func webSocketOversize(_ connection: WebSocketConnection) {
        metrics.oversizeCloses.add()
        logger.info("closing client with 1009", metadata: ["conn": "\(connection.id)", "peer": "\(connection.peer)"])
    }

    // MARK: Actions out

    private func now() -> FanOut.Now {
        FanOut.Now(monotonicMicros: monotonicMicros(), wallMillis: wallMillis())
    }

    private func handle(_ event: FanOut.Event) {
        carryOut(fanOut.handle(event, now: now()))
    }

    private func carryOut(_ actions: [FanOut.Action]) {
        for action in actions {
            switch action {
            case let .write(id, frames, pieces, more):
                guard let connection = connections[id], connection.isOpen, connection.write(frames: frames, pieces: pieces) else { continue }
                metrics.writes.add()
                metrics.deliveries.add(frames.count)
                if more { connection.requestWritable() }
            case let .writeSoon(id):
                // At once when lws holds nothing unsent for it, else when it becomes writable.
                // writeSoon only comes from wake-ups and timers, never from inside one of this
                // connection's own callbacks.
                guard let connection = connections[id], connection.isOpen else { continue }
                if connection.canWriteNow { write(connection) } else { connection.requestWritable() }
            case let .requestWritable(id):
                connections[id]?.requestWritable()
            case let .close(id, code, reason, label, grace):
                guard let connection = connections[id], connection.isOpen else { continue }
                logger.info("closing client with \(code)", metadata: ["conn": "\(id)", "peer": "\(connection.peer)",
                                                                     "reason": "\(label)", "detail": "\(reason)"])
                connection.close(code: code, reason: reason, graceSeconds: Int32(grace))
            case let .readHistory(channel, request):
                live.post(.watch(channel: channel, request: request, hub: index))
            case let .unwatch(channel):
                live.post(.unwatch(channel: channel, hub: index))
            case let .keepEmptyAlive(channels):
                reader.requests.post(.keepEmptyAlive(channels: channels))
            case let .schedule(due):
                let now = monotonicMicros()
                server?.schedule(afterMicros: Int64(due > now ? due - now : 0))
            case let .sequencedAt(millis):
                let now = wallMillis()
                metrics.observeLatency(millis: now > millis ? Int(now - millis) : 0)
            case let .tally(tally):
                metrics.count(tally)
            case let .presence(event):
                presence?.events.post(event)
            case let .lifecycle(input):
                lifecycle?.inputs.post(input)
            case let .askSubscribeProxy(id, channel, url, user, client, info):
                guard let proxy else {
                    handle(.subscribeProxyAnswered(id, channel: channel, allowed: nil))
                    continue
                }
                proxy.askSubscribe(url: url, hub: index, connection: id, channel: channel, user: user, client: client, info: info)
            case let .talkBack(id, request):
                guard let talkBack else {
                    handle(.talkBack(id, TalkBackWorker.disabled(request)))
                    continue
                }
                talkBack.take(hub: index, connection: id, request: request)
            }
        }
    }
}
