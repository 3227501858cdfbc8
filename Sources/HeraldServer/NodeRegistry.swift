import HeraldAMQP
import HeraldCore
import HeraldRedis
import HeraldRuntime
import Logging
import Synchronization

/// The deployment's node registry, and the admin page's data. Every second each node stores its
/// heartbeat in Redis (`<prefix>:node:<id>`, a JSON object that expires after
/// `AdminOverview.lostAfterMillis`, and its time in the sorted set `<prefix>:nodes`); then it
/// reads every node's, asks Redis for its `INFO` and RabbitMQ for the depth of the history and
/// dead-letter queues, and keeps the result as the overview the admin listener serves.
///
/// - Important: owns its own AMQP and Redis connection; runs on its own thread
///   (`herald-registry`), the only one that touches its state (hence `@unchecked Sendable`).
final class NodeRegistry: Worker, @unchecked Sendable {
    /// The latest overview (JSON), for the admin listener on any thread; nil before the first.
    let overview = Mutex<[UInt8]?>(nil)
    private lazy var redisLink = makeRedisLink("Redis (node registry)")
    private lazy var amqpLink = makeAMQPLink("RabbitMQ (node registry)", healthy: { _ in }) { _ throws(AMQPError) in }
    static let intervalMillis = 1_000
    /// Lost nodes stay listed this long after their last heartbeat.
    static let forgetAfterMillis: UInt64 = 300_000
    private let startedMillis = wallMillis()
    private var previous: (atMillis: UInt64, messagesIn: Int, deliveries: Int)?

    func run() {
        while !stop.isSet {
            round()
            stop.sleep(millis: Self.intervalMillis)
        }
        // A node that stops leaves the registry at once, rather than showing as lost.
        if let redis = redisLink.get(wait: false) {
            _ = try? redis.pipeline([["ZREM", config.nodesKey, config.nodeID].map { Array($0.utf8) },
                                     ["DEL", config.nodeKey(config.nodeID)].map { Array($0.utf8) }])
        }
        redisLink.close { $0.close() }
        amqpLink.close { $0.close() }
    }

    private func round() {
        let now = wallMillis()
        let beat = heartbeat(now)
        let rabbitmq = rabbitmqStatus()
        guard let redis = redisLink.get(wait: false) else {
            return publish(AdminOverview.render(servedBy: config.nodeID, nowMillis: now,
                                                nodes: [.init(id: config.nodeID, lastSeenMillis: now, beat: beat)],
                                                redis: .object([("status", .string("down"))]), rabbitmq: rabbitmq))
        }
        do {
            var encoded: [UInt8] = []
            JSON.encode(beat, to: &encoded)
            let key = config.nodeKey(config.nodeID)
            let replies = try redis.pipeline([
                [Array("SET".utf8), Array(key.utf8), encoded, Array("PX".utf8), Array(String(AdminOverview.lostAfterMillis).utf8)],
                ["ZADD", config.nodesKey, String(now), config.nodeID].map { Array($0.utf8) },
                ["ZREMRANGEBYSCORE", config.nodesKey, "-inf", "(\(now > Self.forgetAfterMillis ? now - Self.forgetAfterMillis : 0)"].map { Array($0.utf8) },
                ["ZRANGE", config.nodesKey, "0", "-1", "WITHSCORES"].map { Array($0.utf8) },
                ["INFO"].map { Array($0.utf8) },
            ])
            for reply in replies { if case let .error(message) = reply { throw RedisError("node registry: \(message)") } }
            guard case let .array(scored) = replies[3] else { throw RedisError("node registry: unexpected ZRANGE reply \(replies[3])") }
            var ids: [(String, UInt64)] = []
            var i = 0
            while i + 1 < scored.count {
                if let id = scored[i].text, let at = scored[i + 1].text.flatMap({ UInt64($0) }) { ids.append((id, at)) }
                i += 2
            }
            let beats = ids.isEmpty ? RedisReply.array([]) : try redis.command(["MGET"] + ids.map { config.nodeKey($0.0) })
            var nodes: [AdminOverview.Node] = []
            if case let .array(values) = beats {
                for ((id, at), value) in zip(ids, values) {
                    nodes.append(.init(id: id, lastSeenMillis: at, beat: value.bytes.flatMap { try? JSON.parse($0) }))
                }
            }
            publish(AdminOverview.render(servedBy: config.nodeID, nowMillis: now, nodes: nodes,
                                         redis: redisStatus(redis, info: replies[4].text ?? ""), rabbitmq: rabbitmq))
        } catch {
            redisLink.drop(error, "the node registry waits until it is back")
        }
    }

    private func publish(_ json: [UInt8]) {
        overview.withLock { $0 = json }
    }

    /// This node's heartbeat: what it serves, its role, its rates since the last beat, its
    /// latest dead letters and the channels it sequenced most.
    private func heartbeat(_ now: UInt64) -> JSONValue {
        let messagesIn = metrics.messagesIn.current, deliveries = metrics.deliveries.current
        let span = previous.map { now > $0.atMillis ? now - $0.atMillis : 0 } ?? 0
        let inRate = previous.map { AdminOverview.perSecond(messagesIn, $0.messagesIn, overMillis: span) } ?? 0
        let outRate = previous.map { AdminOverview.perSecond(deliveries, $0.deliveries, overMillis: span) } ?? 0
        previous = (now, messagesIn, deliveries)
        let channels = AdminOverview.busiest(metrics.channelActivity.take(), overMillis: max(span, 1))
        func n(_ x: Int) -> JSONValue { .number(String(x)) }
        return .object([
            ("id", .string(config.nodeID)),
            ("instance", .string(config.instance)),
            ("version", .string(HeraldVersion.current)),
            ("started_ms", .number(String(startedMillis))),
            ("listen", .string("\(config.host):\(config.port)")),
            ("admin", config.adminHost.map { .string("\($0):\(config.adminPort)") } ?? .null),
            ("ws_threads", n(metrics.wsThreads.count)),
            ("connections", n(metrics.connections.current)),
            ("subscriptions", n(metrics.subscriptions.current)),
            ("sequencer", .bool(health.isSequencer)),
            ("amqp", .string(health.amqpUp ? "up" : "down")),
            ("redis", .string(health.redisUp ? "up" : "down")),
            ("messages_in_total", n(messagesIn)),
            ("deliveries_total", n(deliveries)),
            ("messages_in_per_second", AdminOverview.number(inRate)),
            ("deliveries_per_second", AdminOverview.number(outRate)),
            ("dead_lettered_total", n(metrics.deadLettered.current)),
            ("dead_letters", .array(metrics.recentDeadLetters.all.map { d in
                .object([("at_ms", .number(String(d.atMillis))), ("channel", .string(d.channel)), ("reason", .string(d.reason)),
                         ("message", .string(d.message)), ("message_id", d.messageID.map { .string($0) } ?? .null)])
            })),
            ("channels", .array(channels.map { .object([("channel", .string($0.channel)), ("per_second", AdminOverview.number($0.perSecond))]) })),
        ])
    }

    private func redisStatus(_ redis: RedisConnection, info text: String) -> JSONValue {
        let info = AdminOverview.info(text)
        return .object([
            ("status", .string("up")),
            ("address", .string("\(redis.endpoint.host):\(redis.endpoint.port)")),
            ("sentinel", .bool(redisSentinel != nil)),
            ("version", info["redis_version"].map { .string($0) } ?? .null),
            ("role", info["role"].map { .string($0) } ?? .null),
            ("replicas", info["connected_slaves"].flatMap { Int($0) }.map { .number(String($0)) } ?? .null),
            ("used_memory", info["used_memory_human"].map { .string($0) } ?? .null),
            ("uptime_seconds", info["uptime_in_seconds"].flatMap { Int($0) }.map { .number(String($0)) } ?? .null),
        ])
    }

    private func rabbitmqStatus() -> JSONValue {
        guard let amqp = amqpLink.get(wait: false) else { return .object([("status", .string("down"))]) }
        do {
            let history = try amqp.queueStatus(config.historyQueue)
            let dead = try amqp.queueStatus(config.deadQueue)
            return .object([
                ("status", .string("up")),
                ("address", .string("\(amqp.endpoint.host):\(amqp.endpoint.port)")),
                ("nodes", .number(String(amqpEndpoints.count))),
                ("history_queue", .object([("name", .string(config.historyQueue)), ("messages", .number(String(history.messages))),
                                           ("consumers", .number(String(history.consumers)))])),
                ("dead_queue", .object([("name", .string(config.deadQueue)), ("messages", .number(String(dead.messages)))])),
            ])
        } catch {
            amqpLink.drop(error, "the node registry waits until it is back")
            return .object([("status", .string("down"))])
        }
    }
}
