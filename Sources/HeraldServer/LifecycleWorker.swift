import HeraldAMQP
import HeraldCore
import HeraldRedis
import HeraldRuntime
import Logging

/// Tells backends what happens to connections and channels (`--lifecycle-events`): carries out
/// the `LifecycleLedger`'s decisions. The WebSocket threads post connects, subscriptions and
/// disconnects; each round stores what a survivor would need in Redis, then publishes the events
/// to `<exchange>.events` with confirms. Each heartbeat renews this instance's lifecycle lease and
/// reaps instances whose lease ran out, emitting their disconnects and vacated channels.
///
/// - Important: owns AMQP connection 5 and Redis connection 5; runs on its own thread
///   (`herald-lifecycle`), which is the only one that touches its state (hence `@unchecked Sendable`).
final class LifecycleWorker: Worker, @unchecked Sendable {
    let inputs = Mailbox<LifecycleInput>()
    private lazy var amqpLink = makeAMQPLink("RabbitMQ (lifecycle events)", healthy: { _ in }) { [config] connection throws(AMQPError) in
        try connection.declareExchange(config.eventsExchange, type: "topic", durable: true)
        try connection.confirmSelect()
    }
    private lazy var redisLink = makeRedisLink("Redis (lifecycle)")
    private var heartbeatSHA: String?
    private var occupancySHA: String?
    private lazy var ledger = LifecycleLedger(settings: .init(
        instance: config.instance, node: config.nodeID,
        vacateDelayMicros: UInt64(config.lifecycleVacateMillis) * 1_000,
        snapshotMicros: UInt64(config.lifecycleSnapshotMillis) * 1_000))
    private var heartbeatMicros: UInt64 { UInt64(max(100, config.lifecycleLeaseMillis / 5)) * 1_000 }
    private var nextHeartbeat: UInt64 = 0
    private var reportedDropped = 0

    func run() {
        logger.info("lifecycle events", metadata: ["exchange": "\(config.eventsExchange)", "instance": "\(config.instance)",
                                                   "lease_ms": "\(config.lifecycleLeaseMillis)"])
        while !stop.isSet {
            let now = monotonicMicros()
            let due = min(nextHeartbeat, ledger.nextDueMicros ?? .max)
            let wait = ledger.unsent.isEmpty ? (due > now ? Int(min((due - now) / 1_000, 100)) : 0) : 10
            round(inputs.take(timeoutMillis: max(wait, 1)))
        }
        // Stopping: this instance's connections disconnect and its channels are released now,
        // rather than a lease later.
        round(inputs.take(timeoutMillis: 0), farewell: true)
        amqpLink.close { $0.close() }
        redisLink.close { $0.close() }
    }

    private func round(_ batch: [LifecycleInput], farewell: Bool = false) {
        let now = FanOut.Now(monotonicMicros: monotonicMicros(), wallMillis: wallMillis())
        for input in batch { ledger.record(input, now: now) }
        if farewell { ledger.farewell(now: now) }
        if !batch.isEmpty { metrics.lifecycleConnections.add(ledger.clients.count - metrics.lifecycleConnections.current) }
        guard let redis = redisLink.get(wait: false) else { return }
        do {
            if now.monotonicMicros >= nextHeartbeat && !farewell { try heartbeat(redis, now) }
            ledger.snapshotDue(now: now)
            try occupancy(redis, now)
            try store(redis)
        } catch {
            heartbeatSHA = nil
            occupancySHA = nil
            redisLink.drop(error, "lifecycle events wait until it is back")
            return
        }
        publish(wait: !farewell)
        release()
        if farewell {
            // The disconnects are confirmed: the connections leave Redis, and so does the lease.
            if let redis = redisLink.get(wait: false) {
                try? store(redis)
                _ = try? redis.command(["ZREM", config.lifecycleLeasesKey, config.instance])
            }
        }
    }

    private func heartbeat(_ redis: RedisConnection, _ now: FanOut.Now) throws(RedisError) {
        let reply = try Scripts.lifecycleHeartbeat.run(on: redis, sha: &heartbeatSHA, calls: [Scripts.lifecycleHeartbeatCall(config)])[0]
        guard let (lapsed, reaped) = Scripts.lifecycleReaps(reply) else { throw RedisError("lifecycle heartbeat: unexpected reply \(reply)") }
        nextHeartbeat = now.monotonicMicros + heartbeatMicros
        if lapsed {
            if ledger.seq > 0 { logger.warning("this node's lifecycle lease had run out; storing its connections again and sending a snapshot") }
            ledger.leaseLapsed(now: now)
        }
        for lost in reaped {
            logger.warning("reaping a node instance whose lifecycle lease ran out",
                           metadata: ["instance": "\(lost.instance)", "clients": "\(lost.clients.count)", "vacated": "\(lost.vacated.count)"])
            metrics.lifecycleReaps.add()
            ledger.reaped(lost, now: now)
        }
    }

    private func occupancy(_ redis: RedisConnection, _ now: FanOut.Now) throws(RedisError) {
        let work = ledger.occupancyWork(nowMicros: now.monotonicMicros)
        let changes = work.occupy.map { ($0, true) } + work.release.map { ($0, false) }
        if changes.isEmpty { return }
        let replies = try Scripts.occupancy.run(on: redis, sha: &occupancySHA,
                                                calls: changes.map { Scripts.occupancyCall(config, channel: $0.0, occupy: $0.1) })
        for ((channel, occupy), reply) in zip(changes, replies) {
            guard let version = reply.integer else { throw RedisError("occupancy: unexpected reply \(reply)") }
            let transition = version > 0 ? UInt64(version) : nil
            if occupy { ledger.occupied(channel, version: transition, now: now) } else { ledger.released(channel, version: transition, now: now) }
        }
    }

    private func store(_ redis: RedisConnection) throws(RedisError) {
        let writes = ledger.takeStoreWrites()
        if writes.isEmpty { return }
        let key = Array((config.lifecycleClientsPrefix + config.instance).utf8)
        let commands = writes.map { w -> [[UInt8]] in
            if let entry = w.entry { return [Array("HSET".utf8), key, Array(w.client.utf8), entry.encoded] }
            return [Array("HDEL".utf8), key, Array(w.client.utf8)]
        }
        do throws(RedisError) {
            let replies = try redis.pipeline(commands)
            if let failed = replies.first(where: { if case .error = $0 { return true } else { return false } }) {
                throw RedisError("storing connections: \(failed)")
            }
        } catch {
            ledger.storeFailed(writes)
            throw error
        }
    }

    /// Removes what lost instances left in Redis once their events are confirmed; until then a
    /// survivor taking over this one's claims (if this one dies) emits them again.
    private func release() {
        let done = ledger.takeReleasable()
        guard !done.isEmpty else { return }
        guard let redis = redisLink.get(wait: false),
              (try? redis.pipeline(done.flatMap { Scripts.lifecycleRelease(config, instance: $0) })) != nil else {
            return ledger.releaseFailed(done)
        }
    }

    /// Publishes what is unsent with confirms; a failure sends every unconfirmed event again.
    private func publish(wait: Bool) {
        let events = ledger.unsent
        guard let last = events.last?.seq else { return }
        guard let amqp = amqpLink.get(wait: false) else { return ledger.publishFailed() }
        do {
            for event in events {
                try amqp.publish(exchange: config.eventsExchange, routingKey: event.routingKey, body: event.body,
                                 properties: AMQPProperties(contentType: "application/json", messageID: "\(config.instance)-\(event.seq)",
                                                            persistent: true))
            }
            ledger.sent()
            let refused = try amqp.waitForConfirms(timeoutMillis: wait ? 5_000 : 1_000)
            guard refused.isEmpty else { throw AMQPError("RabbitMQ refused \(refused.count) lifecycle events") }
            ledger.confirmed(through: last)
            metrics.lifecycleEvents.add(events.count)
        } catch {
            ledger.publishFailed()
            amqpLink.drop(error, "unconfirmed lifecycle events are published again once it is back")
        }
        if ledger.dropped > reportedDropped {
            logger.error("lifecycle events dropped: more than \(ledger.settings.maxUnconfirmed) waited for RabbitMQ; consumers see the seq gap and resync from the next snapshot")
            metrics.lifecycleDropped.add(ledger.dropped - reportedDropped)
            reportedDropped = ledger.dropped
        }
    }
}
