import HeraldAMQP
import HeraldCore
import HeraldRedis
import Logging

/// The sequencer thread: consumes `<exchange>.history` (single active consumer), stores each
/// message through the `sequence` script, publishes the sequenced batch to `<exchange>.live`
/// with a confirm, and only then acks the deliveries (one multiple-ack per batch).
///
/// - Important: owns AMQP connection 1 and Redis connection 1; runs on its own thread.
final class Sequencer: Worker, @unchecked Sendable {
    private var amqp: AMQPConnection?
    private var redis: RedisConnection?
    private var scriptSHA: String?
    private var amqpBackoff = Backoff()
    private var redisBackoff = Backoff()
    private var lastProbe: UInt64 = 0
    private var everConnectedAMQP = false
    private var everConnectedRedis = false

    func run() {
        while !stop.isSet {
            guard let amqp = connectAMQP() else { continue }
            guard connectRedis() != nil else { continue }
            do {
                try probeIfDue(amqp)
                var batch: [AMQPDelivery] = []
                let first = try amqp.nextEvent(timeoutMillis: 100)
                if case let .delivery(d) = first { batch.append(d) }
                while batch.count < config.batchSize && !batch.isEmpty {
                    guard case let .delivery(d) = try amqp.nextEvent(timeoutMillis: 0) else { break }
                    batch.append(d)
                }
                if !batch.isEmpty { try process(batch, amqp) }
            } catch {
                logger.error("RabbitMQ connection lost; unacknowledged messages will be delivered again", metadata: ["error": "\(error)"])
                dropAMQP()
            }
        }
        amqp?.close()
        redis?.close()
    }

    /// Every node sends itself a probe through the history queue every 2 s. Only the active
    /// consumer receives probes, so receiving any delivery means "this node is the sequencer".
    private func probeIfDue(_ amqp: AMQPConnection) throws(AMQPError) {
        let now = monotonicNanos() / 1_000_000
        guard now - lastProbe >= 2_000 else { return }
        lastProbe = now
        try amqp.publish(exchange: "", routingKey: config.historyQueue, body: [],
                     properties: AMQPProperties(headers: [("x-herald-probe", config.nodeID)]))
    }

    private func process(_ deliveries: [AMQPDelivery], _ amqp: AMQPConnection) throws(AMQPError) {
        health.lastHistoryDelivery.store(Int(monotonicNanos() / 1_000_000), ordering: .relaxed)
        let now = wallMillis()
        var calls: [(keys: [[UInt8]], args: [[UInt8]])] = []
        var channels: [String] = [] // parallel to calls
        var dead: [(AMQPDelivery, EnvelopeError)] = []
        for d in deliveries {
            if d.properties.header("x-herald-probe") != nil { continue }
            let channel = d.routingKey.isEmpty ? config.defaultChannel : d.routingKey
            if let problem = Admission.check(channel: channel, bodySize: d.body.count, maxBytes: config.maxMessageBytes) {
                dead.append((d, problem))
                continue
            }
            let publisherID = d.properties.messageID.flatMap { $0.isEmpty ? nil : $0 }
            let id = publisherID ?? "\(config.nodeID)-\(randomHex(bytes: 8))"
            do {
                let envelope = try MessageEnvelope(channel: channel, id: id, timeMillis: now, body: d.body,
                                                   contentType: d.properties.contentType)
                let idKey = publisherID.map { config.idKey(channel, $0) } ?? ""
                channels.append(channel)
                calls.append((keys: [Array(config.metaKey(channel).utf8), Array(config.historyKey(channel).utf8), Array(idKey.utf8)],
                              args: [envelope.head, envelope.tail, Array(String(config.historySize).utf8),
                                     Array(String(config.dedupeSeconds).utf8), Array(randomHex(bytes: 6).utf8)]))
            } catch {
                dead.append((d, error))
            }
        }

        // Redis first: retried until it answers (messages wait, unacked, in RabbitMQ meanwhile).
        var sequenced: [SequencedMessage] = []
        if !calls.isEmpty {
            guard let replies = storeInRedis(calls) else { return } // stopping: RabbitMQ redelivers
            for (i, reply) in replies.enumerated() {
                guard case let .array(items) = reply, items.count == 4, let seq = items[0].integer,
                      let frame = items[1].bytes, let epoch = items[2].text, let dup = items[3].integer else {
                    // The script failed for this one message: keep it safe for a human to look at.
                    logger.error("sequence script failed", metadata: ["reply": "\(reply)"])
                    continue
                }
                let channel = channels[i]
                if dup == 1 { metrics.duplicates.add() } else { metrics.messagesIn.add() }
                sequenced.append(SequencedMessage(channel: channel, epoch: epoch, seq: UInt64(seq), frame: frame))
            }
        }

        // Then every node hears about it (duplicates too: a crash may have come before their broadcast).
        var chunk: [SequencedMessage] = []
        var chunkBytes = 0
        for m in sequenced {
            chunk.append(m)
            chunkBytes += m.frame.count
            if chunkBytes > 512 * 1024 {
                try amqp.publish(exchange: config.liveExchange, routingKey: "", body: LiveBatch.encode(chunk))
                chunk = []
                chunkBytes = 0
            }
        }
        if !chunk.isEmpty { try amqp.publish(exchange: config.liveExchange, routingKey: "", body: LiveBatch.encode(chunk)) }
        for (d, error) in dead {
            var headers = d.properties.headers.filter { $0.0 != "x-herald-error" }
            headers.append(("x-herald-error", error.header))
            headers.append(("x-herald-routing-key", d.routingKey))
            try amqp.publish(exchange: "", routingKey: config.deadQueue, body: d.body,
                         properties: AMQPProperties(contentType: d.properties.contentType, messageID: d.properties.messageID,
                                                    persistent: true, headers: headers))
            logger.warning("dead-lettered a message", metadata: ["channel": "\(d.routingKey.prefix(200))", "error": "\(error.header)"])
        }
        let refused = try amqp.waitForConfirms(timeoutMillis: 10_000)
        if !refused.isEmpty {
            throw AMQPError("RabbitMQ refused \(refused.count) live/dead-letter publishes")
        }
        metrics.deadLettered.add(dead.count)
        try amqp.ack(deliveries.last!.tag, multiple: true)
        metrics.sequencerBatches.add()
    }

    private func storeInRedis(_ calls: [(keys: [[UInt8]], args: [[UInt8]])]) -> [RedisReply]? {
        while !stop.isSet {
            guard let redis = connectRedis() else { continue }
            do {
                return try Scripts.sequence.run(on: redis, sha: &scriptSHA, calls: calls)
            } catch {
                logger.error("Redis write failed; holding the batch and retrying", metadata: ["error": "\(error)"])
                redis.close()
                self.redis = nil
                health.sequencerRedis.store(false, ordering: .relaxed)
            }
        }
        return nil
    }

    private func connectAMQP() -> AMQPConnection? {
        if let amqp { return amqp }
        let connection = AMQPConnection(endpoint: amqpEndpoint)
        do {
            try connection.connect()
            try Topology.declare(connection, config)
            try connection.qos(prefetch: config.prefetch)
            try connection.confirmSelect()
            try connection.consume(queue: config.historyQueue)
            amqp = connection
            amqpBackoff.reset()
            health.sequencerAMQP.store(true, ordering: .relaxed)
            if everConnectedAMQP { metrics.amqpReconnects.add() }
            everConnectedAMQP = true
            logger.info("sequencer consuming", metadata: ["queue": "\(config.historyQueue)"])
            return connection
        } catch {
            connection.abandon()
            health.sequencerAMQP.store(false, ordering: .relaxed)
            let wait = amqpBackoff.next()
            logger.error("cannot reach RabbitMQ; retrying", metadata: ["error": "\(error)", "retry_ms": "\(wait)"])
            stop.sleep(millis: wait)
            return nil
        }
    }

    private func dropAMQP() {
        amqp?.abandon()
        amqp = nil
        health.sequencerAMQP.store(false, ordering: .relaxed)
        stop.sleep(millis: amqpBackoff.next())
    }

    private func connectRedis() -> RedisConnection? {
        if let redis { return redis }
        let connection = RedisConnection(endpoint: redisEndpoint)
        do {
            try connection.connect()
            redis = connection
            scriptSHA = nil
            redisBackoff.reset()
            health.sequencerRedis.store(true, ordering: .relaxed)
            if everConnectedRedis { metrics.redisReconnects.add(); logger.info("Redis is back (sequencer)") }
            everConnectedRedis = true
            return connection
        } catch {
            health.sequencerRedis.store(false, ordering: .relaxed)
            let wait = redisBackoff.next()
            logger.error("cannot reach Redis; not consuming until it is back", metadata: ["error": "\(error)", "retry_ms": "\(wait)"])
            stop.sleep(millis: wait)
            return nil
        }
    }
}

/// The RabbitMQ objects every node declares (idempotent, so any node may start first).
enum Topology {
    static func declare(_ amqp: AMQPConnection, _ config: HeraldConfig) throws(AMQPError) {
        try amqp.declareExchange(config.exchange, type: "fanout", durable: true)
        // Classic is RabbitMQ's default: leave the argument out so queues declared by older
        // versions (without it) stay equivalent.
        let type: [(String, AMQPArgument)] = config.queueType == "classic" ? [] : [("x-queue-type", .string(config.queueType))]
        try amqp.declareQueue(config.historyQueue, durable: true, arguments: [("x-single-active-consumer", .bool(true))] + type)
        try amqp.bindQueue(config.historyQueue, exchange: config.exchange)
        try amqp.declareExchange(config.liveExchange, type: "fanout", durable: true)
        try amqp.declareQueue(config.deadQueue, durable: true, arguments: type)
    }
}
