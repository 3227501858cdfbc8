import HeraldAMQP
import HeraldCore
import HeraldRedis
import HeraldRuntime
import HeraldWebSocket
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
    /// `GET /api/channels` and `GET /api/info`, answered between rounds.
    private let requests = Mailbox<HTTPRequest>()
    /// The WebSocket threads' subscribers per channel, asked for each round.
    private let channelReports = Mailbox<[String: Int]>()
    /// What this node last wrote to its channel hash.
    private var writtenChannels: [String: Int]?
    /// The nodes of the latest round.
    private var latestNodes: [AdminOverview.Node] = []
    /// With partitions: told how many nodes live, each round (their share of the partitions).
    var ledger: PartitionLedger?

    /// A server API read (`/api/channels`, `/api/info`). Any thread.
    func take(_ request: HTTPRequest) { requests.post(request) }

    func run() {
        while !stop.isSet {
            round()
            let next = monotonicMillis() + UInt64(Self.intervalMillis)
            while !stop.isSet, monotonicMillis() < next {
                for request in requests.take(timeoutMillis: Int(min(200, next - monotonicMillis()))) { answer(request) }
            }
        }
        // A node that stops leaves the registry at once, rather than showing as lost.
        if let redis = redisLink.get(wait: false) {
            _ = try? redis.pipeline([["ZREM", config.nodesKey, config.nodeID].map { Array($0.utf8) },
                                     ["DEL", config.nodeKey(config.nodeID)].map { Array($0.utf8) },
                                     ["DEL", config.nodeChannelsKey(config.nodeID)].map { Array($0.utf8) }])
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
            latestNodes = nodes
            let alive = nodes.count { $0.beat != nil && now >= $0.lastSeenMillis && now - $0.lastSeenMillis <= AdminOverview.lostAfterMillis }
            ledger?.liveNodes.store(max(1, alive), ordering: .relaxed)
            try writeChannels(redis)
            publish(AdminOverview.render(servedBy: config.nodeID, nowMillis: now, nodes: nodes,
                                         redis: redisStatus(redis, info: replies[4].text ?? ""), rabbitmq: rabbitmq))
        } catch {
            redisLink.drop(error, "the node registry waits until it is back")
        }
    }

    /// Stores this node's subscribers per channel (`<prefix>:node:<id>:channels`, expiring with
    /// the heartbeat) when they changed, and asks the WebSocket threads for the next round's.
    private func writeChannels(_ redis: RedisConnection) throws {
        let reports = channelReports.drain()
        for hub in hubs.all { hub.post(.reportChannels(channelReports)) }
        let key = config.nodeChannelsKey(config.nodeID)
        let ttl = String(AdminOverview.lostAfterMillis)
        guard reports.count == hubs.all.count else {
            _ = try redis.command(["PEXPIRE", key, ttl])
            return
        }
        var merged: [String: Int] = [:]
        for report in reports { merged.merge(report, uniquingKeysWith: +) }
        guard merged != writtenChannels else {
            _ = try redis.command(["PEXPIRE", key, ttl])
            return
        }
        var commands: [[String]] = [["MULTI"], ["DEL", key]]
        let entries = merged.sorted { $0.key < $1.key }
        var i = 0
        while i < entries.count {
            let chunk = entries[i..<min(i + 1_000, entries.count)]
            commands.append(["HSET", key] + chunk.flatMap { [$0.key, String($0.value)] })
            i += 1_000
        }
        commands += [["PEXPIRE", key, ttl], ["EXEC"]]
        let replies = try redis.pipeline(commands.map { $0.map { Array($0.utf8) } })
        if case let .error(message)? = replies.last { throw RedisError("node registry: \(message)") }
        writtenChannels = merged
    }

    private func answer(_ request: HTTPRequest) {
        if case let .refused(status, code, message) = HTTPAccess.serverAPI(request.credentials, config: config) {
            metrics.httpAuthRefused.add()
            return request.respond(status: status, json: HTTPResponse.errorJSON(code, message))
        }
        if request.path == "/api/info" {
            var out: [UInt8] = []
            JSON.encode(AdminOverview.info(nodes: latestNodes, servedBy: config.nodeID, nowMillis: wallMillis()), to: &out)
            return request.respond(status: 200, contentType: "application/json", body: out, headers: [("cache-control", "no-store")])
        }
        let pattern = request.query.first { $0.0 == "pattern" }?.1 ?? "*"
        if let problem = ChannelPattern.problem(pattern) {
            return request.respond(status: 400, json: HTTPResponse.errorJSON("bad_pattern", "pattern \(pattern): \(problem)"))
        }
        guard let redis = redisLink.get(wait: false) else {
            return request.respond(status: 503, json: HTTPResponse.errorJSON("redis_unavailable", "Redis is unavailable; try again"))
        }
        let now = wallMillis()
        let live = latestNodes.filter { $0.beat != nil && now - min(now, $0.lastSeenMillis) <= AdminOverview.lostAfterMillis }
        do {
            let replies = live.isEmpty ? [] : try redis.pipeline(live.map { ["HGETALL", config.nodeChannelsKey($0.id)].map { Array($0.utf8) } })
            var totals: [String: Int] = [:]
            for reply in replies {
                guard case let .array(items) = reply else { continue }
                var i = 0
                while i + 1 < items.count {
                    if let channel = items[i].text, let n = items[i + 1].text.flatMap({ Int($0) }),
                       ChannelPattern.matches(pattern, channel) {
                        totals[channel, default: 0] += n
                    }
                    i += 2
                }
            }
            var out: [UInt8] = []
            JSON.encode(.object([
                ("channels", .array(totals.sorted { $0.key < $1.key }.map {
                    .object([("channel", .string($0.key)), ("subscribers", .number(String($0.value)))])
                })),
                ("nodes", .number(String(live.count))),
            ]), to: &out)
            request.respond(status: 200, contentType: "application/json", body: out, headers: [("cache-control", "no-store")])
        } catch {
            redisLink.drop(error, "the node registry waits until it is back")
            request.respond(status: 503, json: HTTPResponse.errorJSON("redis_unavailable", "Redis is unavailable; try again"))
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
            // On a Redis Cluster: every master of the slot map (the other fields are the first's).
            ("cluster_masters", redis.clusterMasters.map { .array($0.map { .string($0.description) }) } ?? .null),
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
            var history = (messages: 0, consumers: 0)
            for queue in config.historyQueues {
                let status = try amqp.queueStatus(queue)
                history = (history.messages + status.messages, history.consumers + status.consumers)
            }
            let dead = try amqp.queueStatus(config.deadQueue)
            return .object([
                ("status", .string("up")),
                ("address", .string("\(amqp.endpoint.host):\(amqp.endpoint.port)")),
                ("nodes", .number(String(amqpEndpoints.count))),
                // With partitions: every partition's queue, summed.
                ("history_queue", .object([("name", .string(config.partitions == 1 ? config.historyQueue : config.historyQueue + ".*")),
                                           ("partitions", .number(String(config.partitions))),
                                           ("messages", .number(String(history.messages))), ("consumers", .number(String(history.consumers)))])),
                ("dead_queue", .object([("name", .string(config.deadQueue)), ("messages", .number(String(dead.messages)))])),
            ])
        } catch {
            amqpLink.drop(error, "the node registry waits until it is back")
            return .object([("status", .string("down"))])
        }
    }
}
