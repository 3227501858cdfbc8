import HeraldAMQP
import HeraldCore
import HeraldRedis
import HeraldRuntime
import HeraldWebSocket
import Logging
import Synchronization

/// Users whose tokens issued before some second are refused, until a second (the server API's
/// `revoke`). Any thread reads it (token checks); the control worker writes it.
final class RevocationList: TokenRevocations {
    private let entries = Mutex<[String: (before: UInt64, until: UInt64)]>([:])
    let metrics: Metrics

    init(metrics: Metrics) { self.metrics = metrics }

    func revokedBefore(user: String, nowSeconds: UInt64) -> UInt64? {
        entries.withLock { e in
            guard let entry = e[user], entry.until > nowSeconds else { return nil }
            return entry.before
        }
    }

    /// Adds (or widens) a user's revocation.
    func add(user: String, before: UInt64, until: UInt64) {
        let count = entries.withLock { e -> Int in
            let old = e[user]
            e[user] = (max(before, old?.before ?? 0), max(until, old?.until ?? 0))
            return e.count
        }
        metrics.revokedUsers.store(count, ordering: .relaxed)
    }

    /// Replaces the list with Redis's, dropping what has run out.
    func replace(_ all: [String: (before: UInt64, until: UInt64)], nowSeconds: UInt64) {
        let count = entries.withLock { e -> Int in
            var merged = all.filter { $0.value.until > nowSeconds }
            // One learned from the control exchange but not yet seen in Redis is kept.
            for (user, entry) in e where entry.until > nowSeconds && merged[user] == nil { merged[user] = entry }
            e = merged
            return e.count
        }
        metrics.revokedUsers.store(count, ordering: .relaxed)
    }

    static func encode(before: UInt64, until: UInt64) -> String { "\(before) \(until)" }
    static func decode(_ text: String) -> (before: UInt64, until: UInt64)? {
        let parts = text.split(separator: " ")
        guard parts.count == 2, let b = UInt64(parts[0]), let u = UInt64(parts[1]) else { return nil }
        return (b, u)
    }
}

/// The server API's commands: `POST /api/disconnect`, `/api/subscribe` and `/api/unsubscribe`
/// come here from the HTTP front and are published to `<exchange>.control` (routing key = the
/// command); every node, this one included, consumes them from its own exclusive queue and
/// applies them to its connections, so one call reaches the whole cluster. A backend that speaks
/// only AMQP publishes the same JSON there itself. `broadcast` messages wait in the durable
/// `<exchange>.control.broadcast` queue for one node's publisher to store them.
/// Revocations go to Redis (`<prefix>:revoked`) before the command is published, so a node that
/// starts later refuses the same tokens; every node re-reads that hash every 10 s.
///
/// - Important: owns its own AMQP and Redis connections; runs on `herald-control`, the only
///   thread that touches its state (hence `@unchecked Sendable`).
final class ControlWorker: Worker, @unchecked Sendable {
    lazy var revocations = RevocationList(metrics: metrics)
    weak var publisher: Publisher?
    private let inbox = Mailbox<HTTPRequest>()
    /// Broadcast deliveries stored (or refused) by the publisher: ack or requeue them here.
    private let settled = Mailbox<(tag: UInt64, requeue: Bool, generation: Int)>()
    private var generation = 0
    private var queue = ""
    private lazy var amqpLink = makeAMQPLink("RabbitMQ (server API)", healthy: { _ in }) { [unowned self] c throws(AMQPError) in
        try c.declareExchange(config.controlExchange, type: "topic", durable: true)
        queue = try c.declareQueue("", durable: false, exclusive: true, autoDelete: true)
        for name in ServerCommand.names where name != "broadcast" {
            try c.bindQueue(queue, exchange: config.controlExchange, routingKey: name)
        }
        let type: [(String, AMQPArgument)] = config.queueType == "classic" ? [] : [("x-queue-type", .string(config.queueType))]
        try c.declareQueue(config.controlBroadcastQueue, durable: true, arguments: type)
        try c.bindQueue(config.controlBroadcastQueue, exchange: config.controlExchange, routingKey: "broadcast")
        try c.qos(prefetch: 64)
        try c.consume(queue: queue)
        try c.consume(queue: config.controlBroadcastQueue)
        try c.confirmSelect()
        generation += 1
    }
    private lazy var redisLink = makeRedisLink("Redis (server API)")
    static let reloadMillis: UInt64 = 10_000
    private var lastReload: UInt64 = 0

    /// A server API request from the HTTP front. Any thread.
    func take(_ request: HTTPRequest) { inbox.post(request) }

    func run() {
        while !stop.isSet {
            if monotonicMillis() - lastReload >= Self.reloadMillis || lastReload == 0 { reloadRevocations() }
            guard let amqp = amqpLink.get(wait: false) else {
                for request in inbox.take(timeoutMillis: 100) {
                    request.respond(status: 503, json: HTTPResponse.errorJSON("amqp_unavailable", "RabbitMQ is unavailable; try again"))
                }
                continue
            }
            do throws(AMQPError) {
                for request in inbox.drain() { try handle(request, amqp) }
                for s in settled.drain() where s.generation == generation {
                    if s.requeue { try amqp.nack(s.tag, multiple: false, requeue: true) } else { try amqp.ack(s.tag, multiple: false) }
                }
                switch try amqp.nextEvent(timeoutMillis: 50) {
                case let .delivery(d): try deliver(d, amqp)
                case .confirm, .returned, .blocked, .unblocked, .timeout: break
                }
            } catch {
                amqpLink.drop(error, "server API commands wait until it is back")
            }
        }
        amqpLink.close { $0.close() }
        redisLink.close { $0.close() }
    }

    // MARK: HTTP

    private func handle(_ request: HTTPRequest, _ amqp: AMQPConnection) throws(AMQPError) {
        if case let .refused(status, code, message) = HTTPAccess.serverAPI(request.credentials, config: config) {
            metrics.httpAuthRefused.add()
            return request.respond(status: status, json: HTTPResponse.errorJSON(code, message))
        }
        let name = String(request.path.dropFirst("/api/".count))
        guard ["disconnect", "subscribe", "unsubscribe"].contains(name) else {
            return request.respond(status: 404, json: HTTPResponse.errorJSON("not_found", "no such endpoint"))
        }
        let command: ServerCommand
        switch ServerCommand.parse(name: name, body: request.body, nowSeconds: wallMillis() / 1000, revokeSeconds: UInt64(config.revokeSeconds)) {
        case let .success(c): command = c
        case let .failure(problem):
            metrics.controlRefused.add()
            return request.respond(status: 400, json: HTTPResponse.errorJSON(problem.code, problem.description))
        }
        if case let .disconnect(.user(user), _, _, before?, until?) = command {
            // Stored before it is announced: a node that starts meanwhile reads it from Redis.
            guard store(user: user, before: before, until: until) else {
                return request.respond(status: 503, json: HTTPResponse.errorJSON("redis_unavailable", "Redis is unavailable; the revocation was not made; try again"))
            }
        }
        let tag = try amqp.publish(exchange: config.controlExchange, routingKey: name, body: Self.encode(command),
                                   properties: AMQPProperties(contentType: "application/json"))
        let refused = try amqp.waitForConfirms(through: tag, timeoutMillis: 5_000)
        if refused.contains(tag) {
            return request.respond(status: 503, json: HTTPResponse.errorJSON("amqp_unavailable", "RabbitMQ refused the command; try again"))
        }
        request.respond(status: 202, json: "{\"command\":\(JSON.quoted(name)),\"accepted\":true}")
    }

    /// The command as the JSON every node reads (a revocation with its exact seconds, so every
    /// node refuses the same tokens).
    static func encode(_ command: ServerCommand) -> [UInt8] {
        var fields: [(String, JSONValue)] = []
        func target(_ t: ServerCommand.Target) {
            switch t {
            case let .user(u): fields.append(("user", .string(u)))
            case let .client(c): fields.append(("client", .string(c)))
            }
        }
        switch command {
        case let .disconnect(t, reconnect, reason, before, until):
            target(t)
            fields += [("reconnect", .bool(reconnect)), ("reason", .string(reason))]
            if let before, let until {
                fields += [("revoke", .bool(true)), ("revoke_before", .number(String(before))), ("revoke_until", .number(String(until)))]
            }
        case let .subscribe(t, channel), let .unsubscribe(t, channel):
            target(t)
            fields.append(("channel", .string(channel)))
        case .broadcast:
            break
        }
        var out: [UInt8] = []
        JSON.encode(.object(fields), to: &out)
        return out
    }

    // MARK: AMQP

    private func deliver(_ d: AMQPDelivery, _ amqp: AMQPConnection) throws(AMQPError) {
        let now = wallMillis() / 1000
        switch ServerCommand.parse(name: d.routingKey, body: d.body, nowSeconds: now, revokeSeconds: UInt64(config.revokeSeconds)) {
        case let .failure(problem):
            try deadLetter(d, "\(problem.code): \(problem.description)", amqp)
        case let .success(.broadcast(channels, data, id)):
            guard let publisher, data.count <= config.maxMessageBytes else {
                return try deadLetter(d, "too_large: data is larger than \(config.maxMessageBytes) bytes", amqp)
            }
            let tag = d.tag, generation = generation, settled = settled, logger = logger, metrics = metrics
            publisher.broadcast(channels: channels, data: data, id: id) { answers in
                // Stored everywhere: ack. Redis unavailable: back to the queue for a retry.
                let failed = answers.contains { if case .failed = $0 { true } else { false } }
                if failed { logger.warning("broadcast from the control exchange not stored; requeued", metadata: ["id": "\(id ?? "-")"]) }
                else { metrics.controlCommands["broadcast"]?.add() }
                settled.post((tag, failed, generation))
            }
        case let .success(command):
            if case let .disconnect(.user(user), _, _, before?, until?) = command {
                revocations.add(user: user, before: before, until: until)
                _ = store(user: user, before: before, until: until)
            }
            for hub in hubs.all { hub.post(.control(command)) }
            metrics.controlCommands[command.name]?.add()
            try amqp.ack(d.tag, multiple: false)
            logger.info("server API command", metadata: ["command": "\(command.name)"])
        }
    }

    /// A poison command is set aside in `<exchange>.dead` with its reason, never dropped unseen.
    private func deadLetter(_ d: AMQPDelivery, _ why: String, _ amqp: AMQPConnection) throws(AMQPError) {
        var headers = d.properties.headers.filter { $0.0 != "x-herald-error" }
        headers.append(("x-herald-error", why))
        headers.append(("x-herald-routing-key", d.routingKey))
        try amqp.publish(exchange: "", routingKey: config.deadQueue, body: d.body,
                         properties: AMQPProperties(contentType: d.properties.contentType, messageID: d.properties.messageID,
                                                    persistent: true, headers: headers))
        try amqp.ack(d.tag, multiple: false)
        metrics.controlRefused.add()
        logger.warning("server API command refused and dead-lettered", metadata: ["command": "\(d.routingKey.prefix(100))", "error": "\(why)"])
    }

    // MARK: Redis

    /// Records a revocation in Redis; false when Redis could not be reached.
    private func store(user: String, before: UInt64, until: UInt64) -> Bool {
        revocations.add(user: user, before: before, until: until)
        guard let redis = redisLink.get(wait: false) else { return false }
        do {
            _ = try redis.command(["HSET", config.revokedKey, user, RevocationList.encode(before: before, until: until)])
            return true
        } catch {
            redisLink.drop(error, "revocations are re-read when it is back")
            return false
        }
    }

    private func reloadRevocations() {
        lastReload = monotonicMillis()
        guard let redis = redisLink.get(wait: false) else { return }
        do {
            let reply = try redis.command(["HGETALL", config.revokedKey])
            guard case let .array(items) = reply else { return }
            let now = wallMillis() / 1000
            var all: [String: (before: UInt64, until: UInt64)] = [:]
            var expired: [String] = []
            var i = 0
            while i + 1 < items.count {
                if let user = items[i].text, let entry = items[i + 1].text.flatMap(RevocationList.decode) {
                    if entry.until > now { all[user] = entry } else { expired.append(user) }
                }
                i += 2
            }
            if !expired.isEmpty { _ = try redis.command(["HDEL", config.revokedKey] + expired) }
            revocations.replace(all, nowSeconds: now)
        } catch {
            redisLink.drop(error, "revocations are re-read when it is back")
        }
    }
}
