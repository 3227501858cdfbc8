import HeraldAMQP
import HeraldCore
import HeraldRedis
import HeraldRuntime
import Logging

/// Tells the cluster who is connected to this node: carries out the `PresenceAnnouncer`'s
/// decisions. The WebSocket threads post joins and leaves; once per tick the merged changes go to
/// the exchange, routed to each channel's presence stream (so the sequencer applies and
/// sequences them in order with everyone else's), with publisher confirms. Each heartbeat renews
/// this instance's lease in Redis and asks for the reap of every instance whose lease ran out.
///
/// - Important: owns AMQP connection 4 and Redis connection 4; runs on its own thread
///   (`herald-presence`), which is the only one that touches its state (hence `@unchecked Sendable`).
final class PresenceWorker: Worker, @unchecked Sendable {
    let events = Mailbox<FanOut.PresenceEvent>()
    private lazy var amqpLink = makeAMQPLink("RabbitMQ (presence)", healthy: { _ in }) { connection throws(AMQPError) in
        try connection.confirmSelect()
    }
    private lazy var redisLink = makeRedisLink("Redis (presence leases)")
    private var sha: String?
    private lazy var announcer = PresenceAnnouncer(
        settings: .init(tickMicros: UInt64(config.presenceTickMillis) * 1_000,
                        leaseMicros: UInt64(config.presenceLeaseMillis) * 1_000,
                        heartbeatMicros: UInt64(max(100, config.presenceLeaseMillis / 5)) * 1_000),
        instance: config.instance)

    func run() {
        logger.info("presence", metadata: ["channels": "\(config.presencePatterns)", "instance": "\(config.instance)",
                                           "lease_ms": "\(config.presenceLeaseMillis)"])
        while !stop.isSet {
            let now = monotonicMicros()
            let wait = announcer.nextDueMicros > now ? Int((announcer.nextDueMicros - now) / 1_000) : 0
            take(events.take(timeoutMillis: min(max(wait, 1), 100)))
            for due in announcer.due(nowMicros: monotonicMicros()) {
                switch due {
                case .heartbeat: heartbeat()
                case let .publish(changes): publish(changes)
                }
            }
        }
        // Stopping: this instance's members leave now rather than a lease later.
        take(events.take(timeoutMillis: 0))
        let farewell = announcer.farewell()
        if !farewell.isEmpty { publish(farewell, wait: false) }
        amqpLink.close { $0.close() }
        redisLink.close { $0.close() }
    }

    private func take(_ batch: [FanOut.PresenceEvent]) {
        for event in batch {
            switch event {
            case let .joined(channel, client, member):
                announcer.joined(channel: channel, client: client, member: member)
            case let .left(channel, client):
                announcer.left(channel: channel, client: client)
            }
        }
        if !batch.isEmpty { metrics.presenceMembers.add(announcer.memberCount - metrics.presenceMembers.current) }
    }

    private func heartbeat() {
        guard let redis = redisLink.get(wait: false) else { return announcer.heartbeatFailed() }
        let call = (keys: [Array(config.presenceLeasesKey.utf8)],
                    args: [config.instance, String(config.presenceLeaseMillis), config.presenceNodePrefix].map { Array($0.utf8) })
        do {
            let reply = try Scripts.heartbeat.run(on: redis, sha: &sha, calls: [call])[0]
            guard case let .array(items) = reply, let lapsed = items.first?.integer else { throw RedisError("heartbeat: unexpected reply \(reply)") }
            if lapsed == 1 && announcer.leased {
                logger.warning("this node's presence lease had run out; announcing its members again")
            }
            announcer.heartbeat(lapsed: lapsed == 1)
            var expired: [(instance: String, channels: [String])] = []
            for i in stride(from: 1, to: items.count - 1, by: 2) {
                guard let instance = items[i].text, let channels = items[i + 1].text else { continue }
                expired.append((instance, channels.split(separator: "\n").map(String.init)))
            }
            let reaps = announcer.reaps(expired: expired, nowMicros: monotonicMicros())
            if !reaps.isEmpty {
                logger.warning("reaping the presence of node instances whose lease ran out",
                               metadata: ["instances": "\(Set(reaps.flatMap(\.change.reaps)).sorted())", "channels": "\(reaps.count)"])
                metrics.presenceReaps.add(reaps.count)
                publish(reaps)
            }
        } catch {
            sha = nil
            announcer.heartbeatFailed()
            redisLink.drop(error, "presence changes wait until this node's lease is renewed")
        }
    }

    /// Publishes the changes with confirms; any failure makes their channels sync next time.
    private func publish(_ changes: [PresenceAnnouncer.Outgoing], wait: Bool = true) {
        guard let amqp = amqpLink.get(wait: false) else { return announcer.unconfirmed() }
        do {
            for c in changes {
                try amqp.publish(exchange: config.exchange, routingKey: PresenceStream.name(of: c.channel), body: c.change.encode(),
                                 properties: AMQPProperties(persistent: true, headers: [("x-herald-presence", config.instance)]))
            }
            let refused = try amqp.waitForConfirms(timeoutMillis: wait ? 5_000 : 1_000)
            guard refused.isEmpty else { throw AMQPError("RabbitMQ refused \(refused.count) presence changes") }
            if let last = changes.map(\.token).max() { announcer.confirmed(through: last) }
            metrics.presenceAnnounced.add(changes.count)
        } catch {
            announcer.unconfirmed()
            amqpLink.drop(error, "presence changes are synced once it is back")
        }
    }
}
