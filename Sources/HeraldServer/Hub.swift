import HeraldCore
import HeraldCrypto
import HeraldWebSocket
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Per-connection state, owned by the service thread.
final class ClientState {
    var outbox: Outbox
    /// What the connection's token allows (nil: anonymous).
    var claims: TokenClaims?
    var ops: RateLimiter
    var lastRateLimitNotice: Int64 = 0
    init(maxControlBytes: Int, ops: RateLimiter) {
        outbox = Outbox(maxControlBytes: maxControlBytes)
        self.ops = ops
    }
}

/// The WebSocket service thread's logic: clients, channel rings, HTTP routes.
///
/// - Important: every method runs on the service thread (lws callbacks and `wokenUp`).
final class Hub: WebSocketHandler {
    let config: HeraldConfig
    let metrics: Metrics
    let health: Health
    let logger: Logger
    let inbox: HubInbox
    var reader: HistoryReader!
    var publisher: Publisher!

    private var rings: [String: ChannelRing] = [:]
    /// Set by the node before the service thread starts; used for the coalescing timer.
    weak var server: WebSocketServer?
    /// A ring grows for bursts up to this: a repair never exceeds the history size.
    private var maxRingCapacity: Int { config.clientBacklog + max(config.historySize, 4 * config.batchSize) }
    /// Connections subscribed to each channel (any state), by connection id.
    private var subscribers: [String: [UInt64: WebSocketConnection]] = [:]
    private var pendingRequests: [UInt64: (connection: WebSocketConnection, channel: String)] = [:]
    private var nextRequest: UInt64 = 1
    private var httpWaiting: [UInt64: HTTPRequest] = [:]
    private var nextToken: UInt64 = 1
    /// Sequencing time of the newest live message per channel, for the latency histogram.
    private var liveTimes: [String: (seq: UInt64, millis: UInt64)] = [:]

    static let maxBatchFrames = 256
    static let maxBatchBytes = 64 * 1024

    init(config: HeraldConfig, metrics: Metrics, health: Health, logger: Logger, inbox: HubInbox) {
        self.config = config
        self.metrics = metrics
        self.health = health
        self.logger = logger
        self.inbox = inbox
    }

    // MARK: WebSocket

    func webSocketOpened(_ connection: WebSocketConnection, query: [(String, String)]) {
        let state = ClientState(maxControlBytes: 4 << 20,
                                ops: RateLimiter(perSecond: config.maxClientOpsPerSecond, burst: config.clientOpsBurst))
        connection.context = state
        metrics.connections.add()
        metrics.connectionsTotal.add()
        let request = ConnectRequest.parse(pairs: query)
        if let token = request.token, !authenticate(connection, state, token: token) { return }
        for error in request.errors { sendError(error, to: connection, state) }
        for (channel, resume) in request.subscriptions { subscribe(connection, state, channel: channel, resume: resume) }
    }

    // MARK: Authorization

    private lazy var verifier: TokenVerifier? = config.tokenSecret.map { TokenVerifier(secret: $0, hmac: LibCrypto.hmacSHA256) }

    /// Checks a token; a bad one closes the connection with 4001 and returns false.
    private func authenticate(_ connection: WebSocketConnection, _ state: ClientState, token: String) -> Bool {
        guard let verifier else {
            refuse(connection, TokenError(.disabled, "tokens are not enabled on this server (no --token-secret)"))
            return false
        }
        switch verifier.verify(token, nowSeconds: wallMillis() / 1000) {
        case let .success(claims):
            let renewal = state.claims != nil
            state.claims = claims
            state.outbox.enqueue(ServerFrame.authenticated(sub: claims.sub, exp: claims.exp))
            if renewal { dropSubscriptionsNotCovered(connection, state) }
            connection.requestWritable()
            authenticatedConnections[connection.id] = connection
            expiries.track(connection.id, expiresAt: claims.exp)
            scheduleTimer(atWallSeconds: claims.exp)
            return true
        case let .failure(error):
            refuse(connection, error)
            return false
        }
    }

    private func refuse(_ connection: WebSocketConnection, _ error: TokenError) {
        metrics.countAuthFailure(error.reason)
        logger.info("closing client with 4001", metadata: ["conn": "\(connection.id)", "peer": "\(connection.peer)",
                                                           "reason": "\(error.reason.rawValue)", "detail": "\(error)"])
        connection.close(code: 4001, reason: String("invalid token: \(error)".prefix(120)))
    }

    /// A token presented again on an open connection replaces the old one: subscriptions the new
    /// token does not cover end here, each with a `forbidden` error and an `unsubscribed` frame.
    private func dropSubscriptionsNotCovered(_ connection: WebSocketConnection, _ state: ClientState) {
        for channel in state.outbox.subscriptions.keys.sorted() where !mayRead(state, channel) {
            metrics.forbidden.add()
            sendError(ClientError(.forbidden, "your new token does not cover this channel: unsubscribed", op: "auth", channel: channel),
                      to: connection, state)
            unsubscribe(connection, state, channel: channel)
        }
    }

    /// Connections whose token has expired are closed with 4002: they may reconnect with a fresh
    /// token and resume where they were. Sending a fresh token (`{"op":"auth"}`) before then
    /// extends the connection without a reconnect.
    private func closeExpired(nowSeconds: UInt64) {
        for id in expiries.expired(nowSeconds: nowSeconds) {
            guard let connection = authenticatedConnections[id], connection.isOpen else { continue }
            metrics.tokenExpiredCloses.add()
            logger.info("closing client with 4002", metadata: ["conn": "\(connection.id)", "peer": "\(connection.peer)"])
            connection.close(code: 4002, reason: "token expired")
        }
        if let next = expiries.next { scheduleTimer(atWallSeconds: next) }
    }

    /// Whether this connection may read `channel`: its token's channels, or the anonymous ones.
    private func mayRead(_ state: ClientState, _ channel: String) -> Bool {
        if let claims = state.claims, claims.allows(channel) { return true }
        return ChannelPattern.matches(any: config.anonymousPatterns, channel)
    }

    func webSocketReceived(_ connection: WebSocketConnection, message: [UInt8], binary: Bool) {
        guard let state = connection.context as? ClientState else { return }
        let now = Int64(monotonicMicros() / 1000)
        guard state.ops.allow(nowMillis: now) else {
            // Dropped; told at most once a second so a flood does not become a flood of errors.
            metrics.rateLimited.add()
            if now - state.lastRateLimitNotice >= 1000 {
                state.lastRateLimitNotice = now
                sendError(ClientError(.rateLimited, "more than \(Int(config.maxClientOpsPerSecond)) frames a second: frames dropped"), to: connection, state)
            }
            return
        }
        if binary {
            sendError(ClientError(.badRequest, "client frames must be text (JSON)"), to: connection, state)
            return
        }
        switch ClientOpParser.parse(message) {
        case let .success(.auth(token)):
            _ = authenticate(connection, state, token: token)
        case let .success(.subscribe(channel, resume)):
            subscribe(connection, state, channel: channel, resume: resume)
        case let .success(.unsubscribe(channel)):
            unsubscribe(connection, state, channel: channel)
        case let .failure(error):
            sendError(error, to: connection, state)
        }
    }

    /// Ends a subscription (if there is one) and answers `unsubscribed`.
    private func unsubscribe(_ connection: WebSocketConnection, _ state: ClientState, channel: String) {
        if state.outbox.unsubscribe(channel: channel) {
            subscribers[channel]?[connection.id] = nil
            metrics.subscriptions.add(-1)
            dropRingIfUnused(channel)
        }
        state.outbox.enqueue(ServerFrame.unsubscribed(channel: channel))
        connection.requestWritable()
    }

    private func sendError(_ error: ClientError, to connection: WebSocketConnection, _ state: ClientState) {
        metrics.clientErrors.add()
        state.outbox.enqueue(error.frame)
        connection.requestWritable()
    }

    private func subscribe(_ connection: WebSocketConnection, _ state: ClientState, channel: String, resume: ResumePosition?) {
        if let claims = state.claims, claims.exp <= wallMillis() / 1000 {
            // Expired since it was accepted: the timer closes it with 4002 at once.
            return closeExpired(nowSeconds: wallMillis() / 1000)
        }
        if state.outbox.subscriptions[channel] == nil, state.outbox.subscriptions.count >= config.maxSubscriptionsPerConnection {
            metrics.subscriptionLimit.add()
            return sendError(ClientError(.tooManySubscriptions, "at most \(config.maxSubscriptionsPerConnection) subscriptions per connection",
                                         op: "subscribe", channel: channel), to: connection, state)
        }
        guard mayRead(state, channel) else {
            metrics.forbidden.add()
            return sendError(ClientError(.forbidden, state.claims == nil
                                         ? "this channel needs a token (connect with ?token= or send {\"op\":\"auth\"})"
                                         : "your token does not cover this channel", op: "subscribe", channel: channel),
                             to: connection, state)
        }
        if state.outbox.subscriptions[channel] == nil { metrics.subscriptions.add() }
        let request = nextRequest
        nextRequest += 1
        state.outbox.subscribe(channel: channel, resume: resume, request: request)
        subscribers[channel, default: [:]][connection.id] = connection
        if rings[channel] == nil { rings[channel] = ChannelRing(capacity: config.clientBacklog) }
        pendingRequests[request] = (connection, channel)
        reader.requests.post(.subscribe(channel: channel, request: request))
        if keepAliveDue == nil {
            let due = monotonicMicros() + keepAliveMicros
            keepAliveDue = due
            scheduleTimer(atMicros: due)
        }
    }

    // MARK: Empty channels

    /// When the meta hashes of subscribed channels without messages are next extended
    /// (monotonic µs); nil while nobody is subscribed. A third of the empty-channel TTL, so two
    /// rounds can fail before a subscriber's epoch could lapse.
    private var keepAliveDue: UInt64?
    private var keepAliveMicros: UInt64 { UInt64(max(1, config.emptyChannelKeySeconds / 3)) * 1_000_000 }

    private func keepEmptyChannelsAlive(now: UInt64) {
        guard let due = keepAliveDue, now >= due else { return }
        let empty = subscribers.keys.filter { rings[$0]?.lastSeq == nil }
        if !empty.isEmpty { reader.requests.post(.keepEmptyAlive(channels: empty)) }
        keepAliveDue = subscribers.isEmpty ? nil : now + keepAliveMicros
    }

    func webSocketWritable(_ connection: WebSocketConnection) {
        send(connection)
    }

    /// Writes the connection's next batch, asking for another writable call while more remains.
    /// Called from the writable callback, or directly when `connection.canWriteNow`.
    private func send(_ connection: WebSocketConnection) {
        guard let state = connection.context as? ClientState, connection.isOpen else { return }
        switch state.outbox.nextBatch(maxFrames: Self.maxBatchFrames, maxBytes: Self.maxBatchBytes, ring: { self.rings[$0] }) {
        case .nothing:
            return
        case let .frames(frames):
            guard connection.write(frames: frames) else { return }
            metrics.writes.add()
            metrics.deliveries.add(frames.count)
            if frames.count >= Self.maxBatchFrames || frames.reduce(0, { $0 + $1.count }) >= Self.maxBatchBytes {
                connection.requestWritable()
            } else if state.outbox.hasControl {
                connection.requestWritable()
            }
        case let .resume(reason):
            closeSlow(connection, reason: reason)
        }
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

    private func closeSlow(_ connection: WebSocketConnection, reason: String) {
        guard connection.isOpen else { return }
        metrics.slowConsumerCloses.add()
        logger.info("closing client with 4008", metadata: ["conn": "\(connection.id)", "peer": "\(connection.peer)", "reason": "\(reason)"])
        connection.close(code: 4008, reason: reason, graceSeconds: 10)
    }

    func webSocketClosed(_ connection: WebSocketConnection) {
        metrics.connections.add(-1)
        if authenticatedConnections.removeValue(forKey: connection.id) != nil { expiries.forget(connection.id) }
        guard let state = connection.context as? ClientState else { return }
        for channel in state.outbox.subscriptions.keys {
            subscribers[channel]?[connection.id] = nil
            metrics.subscriptions.add(-1)
            dropRingIfUnused(channel)
        }
        connection.context = nil
    }

    private func dropRingIfUnused(_ channel: String) {
        if subscribers[channel]?.isEmpty ?? true {
            subscribers[channel] = nil
            rings[channel] = nil
            lastFlush[channel] = nil
            liveTimes[channel] = nil
        }
    }

    // MARK: Events from other threads

    func wokenUp() {
        let events = inbox.mailbox.drain()
        if events.isEmpty { return }
        var touched: Set<String> = []
        var burstSizes: [String: Int] = [:]
        for event in events {
            switch event {
            case let .live(messages), let .local(messages):
                let local = if case .local = event { true } else { false }
                for m in messages {
                    guard let ring = rings[m.channel] else { continue }
                    if local && !ring.isNext(seq: m.seq, epoch: m.epoch) { continue }
                    // Everything appended in this round counts as one burst: room for it on top
                    // of the backlog, so a client that was keeping up is not closed by a burst.
                    let burst = (burstSizes[m.channel] ?? 0) + 1
                    burstSizes[m.channel] = burst
                    ring.reserve(min(config.clientBacklog + burst, maxRingCapacity))
                    switch ring.append(seq: m.seq, epoch: m.epoch, frame: m.frame) {
                    case .appended:
                        touched.insert(m.channel)
                    case .stale:
                        break
                    case .restarted:
                        breakChannel(m.channel, reason: "channel \(m.channel) restarted its sequence")
                    }
                }
            case let .broken(channel):
                breakChannel(channel, reason: "live gap on channel \(channel)")
            case let .history(channel, requests, snapshot):
                for request in requests {
                    guard let (connection, _) = pendingRequests.removeValue(forKey: request),
                          connection.isOpen, let state = connection.context as? ClientState else { continue }
                    guard let plan = state.outbox.apply(channel: channel, request: request, snapshot: snapshot) else { continue }
                    metrics.replays.add()
                    metrics.replayedMessages.add(plan.replay.count)
                    writeNowOrSoon(connection)
                }
            case let .httpHistory(token, result, since, limit):
                guard let request = httpWaiting.removeValue(forKey: token) else { continue }
                switch result {
                case let .success(snapshot):
                    var body: [UInt8] = [UInt8(ascii: "[")]
                    var n = 0
                    if let oldest = snapshot.oldestSeq {
                        for (i, frame) in snapshot.frames.enumerated() where oldest + UInt64(i) > since && n < limit {
                            if n > 0 { body.append(UInt8(ascii: ",")) }
                            body.append(contentsOf: frame)
                            n += 1
                        }
                    }
                    body.append(UInt8(ascii: "]"))
                    request.respond(status: 200, contentType: "application/json", body: body,
                                    headers: [("x-herald-epoch", snapshot.epoch), ("x-herald-seq", String(snapshot.seq))])
                case .failure:
                    request.respond(status: 503, json: Self.errorJSON("redis_unavailable", "Redis is unavailable; try again"))
                }
            case let .published(token, id, ok, message):
                guard let request = httpWaiting.removeValue(forKey: token) else { continue }
                if ok {
                    request.respond(status: 202, json: "{\"id\":\(JSON.quoted(id))}")
                } else {
                    request.respond(status: 503, json: Self.errorJSON("broker_unavailable", message))
                }
            }
        }
        let now = wallMillis()
        for channel in touched {
            if let ring = rings[channel], let last = ring.lastSeq, case let .frame(f) = ring.lookup(last),
               liveTimes[channel]?.seq != last, let t = Self.timeField(f) {
                liveTimes[channel] = (last, t)
                metrics.observeLatency(millis: now > t ? Int(now - t) : 0)
            }
            flushSoon(channel)
        }
    }

    // MARK: Write coalescing

    /// Subscribers of a channel are asked to write at most once per `config.coalesceMicros`.
    /// A message on a quiet channel goes out at once; on a busy channel the messages that
    /// arrive within the interval share one frame per client, so one `send()` carries several.
    private var lastFlush: [String: UInt64] = [:]
    private var pendingFlush: Set<String> = []
    /// When the one service-thread timer is due (monotonic µs); it serves coalescing flushes
    /// and token expiries.
    private var timerDue: UInt64?
    private var expiries = ExpiryQueue()
    private var authenticatedConnections: [UInt64: WebSocketConnection] = [:]

    private func scheduleTimer(atMicros due: UInt64, now: UInt64 = monotonicMicros()) {
        if timerDue.map({ due < $0 }) ?? true {
            timerDue = due
            server?.schedule(afterMicros: Int64(due > now ? due - now : 0))
        }
    }

    /// A timer at a wall-clock second (a token's `exp`).
    private func scheduleTimer(atWallSeconds seconds: UInt64) {
        let now = monotonicMicros()
        let wallNow = wallMillis()
        let wait = seconds * 1000 > wallNow ? (seconds * 1000 - wallNow) * 1000 : 0
        scheduleTimer(atMicros: now + wait, now: now)
    }

    private func flushSoon(_ channel: String) {
        let now = monotonicMicros()
        if let last = lastFlush[channel], now &- last < config.coalesceMicros {
            pendingFlush.insert(channel)
            scheduleTimer(atMicros: last + config.coalesceMicros, now: now)
        } else {
            flush(channel, now: now)
        }
    }

    private func flush(_ channel: String, now: UInt64) {
        lastFlush[channel] = now
        guard let group = subscribers[channel], let ring = rings[channel] else { return }
        for connection in group.values where connection.isOpen {
            // A client whose position left the ring, or whose epoch the ring no longer carries,
            // can never continue here: it resumes (4008), even if it has stopped reading.
            guard let state = connection.context as? ClientState else { continue }
            if state.outbox.mustResume(channel: channel, ring: ring) {
                closeSlow(connection, reason: "cannot continue on \(channel): more than \(config.clientBacklog) messages behind, or its epoch changed")
            } else {
                writeNowOrSoon(connection)
            }
        }
    }

    /// Writes what the connection has pending right away when lws holds nothing unsent for it,
    /// else when it becomes writable. Only from wake-ups and timers, never from inside one of
    /// this connection's own callbacks.
    private func writeNowOrSoon(_ connection: WebSocketConnection) {
        if connection.canWriteNow {
            send(connection)
        } else {
            connection.requestWritable()
        }
    }

    func timerFired() {
        timerDue = nil
        let now = monotonicMicros()
        let due = pendingFlush
        pendingFlush.removeAll(keepingCapacity: true)
        for channel in due { flush(channel, now: now) }
        keepEmptyChannelsAlive(now: now)
        if let next = keepAliveDue { scheduleTimer(atMicros: next, now: now) }
        if let next = expiries.next {
            let wallNow = wallMillis() / 1000
            if next <= wallNow { closeExpired(nowSeconds: wallNow) } else { scheduleTimer(atWallSeconds: next) }
        }
    }

    /// Every subscriber of `channel` must resume: its sequence cannot be continued here.
    private func breakChannel(_ channel: String, reason: String) {
        rings[channel] = ChannelRing(capacity: config.clientBacklog)
        guard let group = subscribers[channel] else { return }
        for connection in group.values { closeSlow(connection, reason: reason) }
    }

    static func timeField(_ frame: [UInt8]) -> UInt64? {
        let marker = Array(#","time":"#.utf8)
        guard let start = frame.indices.first(where: { i in
            i + marker.count <= frame.count && frame[i] == marker[0] && frame[i..<(i + marker.count)].elementsEqual(marker)
        }) else { return nil }
        var v: UInt64 = 0
        var i = start + marker.count
        while i < frame.count, frame[i] >= 0x30, frame[i] <= 0x39 { v = v * 10 + UInt64(frame[i] - 0x30); i += 1 }
        return v
    }

    static func errorJSON(_ code: String, _ message: String) -> String {
        "{\"error\":\(JSON.quoted(code)),\"message\":\(JSON.quoted(message))}"
    }

    // MARK: HTTP

    func httpRequest(_ request: HTTPRequest) {
        let path = request.path
        if path == "/livez" {
            // Liveness: this process serves requests. Never tied to RabbitMQ or Redis, so an
            // orchestrator does not restart every node during an outage Herald rides out.
            return request.respond(status: 200, json: "{\"status\":\"ok\",\"node\":\(JSON.quoted(config.nodeID))}")
        }
        if path == "/healthz" || path == "/readyz" {
            let amqp = health.amqpUp, redis = health.redisUp
            let ok = amqp && redis
            let body = "{\"status\":\"\(ok ? "ok" : "degraded")\",\"amqp\":\"\(amqp ? "up" : "down")\",\"redis\":\"\(redis ? "up" : "down")\",\"node\":\(JSON.quoted(config.nodeID)),\"sequencer\":\(health.isSequencer)}"
            request.respond(status: ok ? 200 : 503, json: body)
            return
        }
        if path == "/metrics" {
            request.respond(status: 200, contentType: "text/plain; version=0.0.4", body: Array(metrics.render(health: health).utf8))
            return
        }
        if path.hasPrefix("/api/publish/") {
            guard request.method == "POST" else {
                return request.respond(status: 405, json: Self.errorJSON("method_not_allowed", "use POST"))
            }
            return publish(request, channel: String(path.dropFirst("/api/publish/".count)))
        }
        if path.hasPrefix("/api/history/") {
            guard request.method == "GET" else {
                return request.respond(status: 405, json: Self.errorJSON("method_not_allowed", "use GET"))
            }
            return history(request, channel: String(path.dropFirst("/api/history/".count)))
        }
        if path == "/ws" {
            // A plain request to the WebSocket path: say what it is for, not "no such file".
            return request.respond(status: 426, json: Self.errorJSON("upgrade_required", "/ws takes WebSocket upgrades only"),
                                   headers: [("upgrade", "websocket")])
        }
        if request.method == "GET" { return staticFile(request) }
        request.respond(status: 404, json: Self.errorJSON("not_found", "no such endpoint"))
    }

    private func publish(_ request: HTTPRequest, channel: String) {
        if case let .refused(status, code, message) = HTTPAccess.publish(request.credentials, config: config) {
            metrics.httpAuthRefused.add()
            return request.respond(status: status, json: Self.errorJSON(code, message))
        }
        if let problem = ChannelName.problem(channel) {
            return request.respond(status: 400, json: Self.errorJSON("bad_channel", problem))
        }
        if request.body.count > config.maxMessageBytes {
            return request.respond(status: 413, json: Self.errorJSON("too_large", "body is larger than \(config.maxMessageBytes) bytes"))
        }
        let contentType = request.header("content-type")
        if let ct = contentType, MessageEnvelope.isJSONContentType(ct) {
            do { _ = try JSON.minify(request.body) } catch {
                return request.respond(status: 400, json: Self.errorJSON("bad_json", "body is not valid JSON: \(error.message) at byte \(error.offset)"))
            }
        }
        let id = request.header("idempotency-key").flatMap { $0.isEmpty ? nil : $0 } ?? "\(config.nodeID)-\(randomHex(bytes: 8))"
        let token = nextToken
        nextToken += 1
        httpWaiting[token] = request
        publisher.requests.post(Publisher.Request(token: token, channel: channel, id: id, body: request.body, contentType: contentType))
    }

    private func history(_ request: HTTPRequest, channel: String) {
        if let problem = ChannelName.problem(channel) {
            return request.respond(status: 400, json: Self.errorJSON("bad_channel", problem))
        }
        if case let .refused(status, code, message) = HTTPAccess.history(request.credentials, channel: channel, config: config,
                                                                          verifier: verifier, nowSeconds: wallMillis() / 1000) {
            metrics.httpAuthRefused.add()
            return request.respond(status: status, json: Self.errorJSON(code, message))
        }
        var since: UInt64 = 0
        var limit = config.historySize
        for (k, v) in request.query {
            if k == "since" {
                guard let s = UInt64(v) else { return request.respond(status: 400, json: Self.errorJSON("bad_request", "since must be a non-negative integer")) }
                since = s
            } else if k == "limit" {
                guard let l = Int(v), l >= 0 else { return request.respond(status: 400, json: Self.errorJSON("bad_request", "limit must be a non-negative integer")) }
                limit = min(l, config.historySize)
            }
        }
        let token = nextToken
        nextToken += 1
        httpWaiting[token] = request
        reader.requests.post(.http(channel: channel, token: token, since: since, limit: limit))
    }

    private func staticFile(_ request: HTTPRequest) {
        var path = request.path
        if path == "/" { path = "/index.html" }
        let parts = path.split(separator: "/")
        guard !parts.contains(where: { $0 == ".." || $0.hasPrefix(".") }) else {
            return request.respond(status: 404, json: Self.errorJSON("not_found", "no such file"))
        }
        let file = config.webRoot + path
        var st = stat()
        guard stat(file, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            return request.respond(status: 404, json: Self.errorJSON("not_found", "no such file"))
        }
        request.serveFile(path: file, mime: Self.mime(for: path))
    }

    static func mime(for path: String) -> String {
        if path.hasSuffix(".html") { return "text/html; charset=utf-8" }
        if path.hasSuffix(".js") || path.hasSuffix(".mjs") { return "text/javascript; charset=utf-8" }
        if path.hasSuffix(".css") { return "text/css; charset=utf-8" }
        if path.hasSuffix(".png") { return "image/png" }
        if path.hasSuffix(".svg") { return "image/svg+xml" }
        if path.hasSuffix(".json") { return "application/json" }
        return "application/octet-stream"
    }
}

extension HTTPRequest {
    var credentials: HTTPAccess.Credentials {
        HTTPAccess.Credentials(apiKey: header("x-api-key"), authorization: header("authorization"))
    }
}
