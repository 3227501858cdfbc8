import HeraldAMQP
import HeraldRuntime
import HeraldCore
import HeraldRedis
import Logging

/// Consumes this node's live queue (bound to `<exchange>.live`) and hands sequenced messages
/// to the service thread. `LiveGapTracker` decides what each message needs: a seq that jumps is
/// repaired from Redis first; after a reconnect every known channel is caught up from Redis,
/// because messages sent while the queue did not exist are gone.
///
/// - Important: owns AMQP connection 2 and Redis connection 3; runs on its own thread
///   (`herald-live`), which is the only one that touches its state (hence `@unchecked Sendable`).
final class LiveConsumer: Worker, @unchecked Sendable {
    private lazy var amqpLink: Reconnecting<AMQPConnection> = {
        let link = makeAMQPLink("RabbitMQ (live queue)",
                            healthy: { [health] in health.liveAMQP.store($0, ordering: .relaxed) }) { [config] connection throws(AMQPError) in
            let queue = try connection.declareQueue("", durable: false, exclusive: true, autoDelete: true)
            try connection.bindQueue(queue, exchange: config.liveExchange)
            try connection.qos(prefetch: 200)
            try connection.consume(queue: queue, exclusive: true)
        }
        link.onReconnect = { [unowned self] _ in catchUp() }
        return link
    }()
    /// For repairs only: it never waits, so a repair while Redis is down fails at once and the
    /// channel's subscribers resume.
    private lazy var redisLink = makeRedisLink("Redis (live repairs)")
    private var sha: String?
    private var tracker = LiveGapTracker()

    func run() {
        while !stop.isSet {
            guard let amqp = amqpLink.get() else { continue }
            // Messages accepted below have advanced the tracker; they must reach the hub even
            // when the connection fails before the batch is complete, or catch-up would skip them.
            var out: [SequencedMessage] = []
            do {
                var lastTag: UInt64?
                var event = try amqp.nextEvent(timeoutMillis: 100)
                while case let .delivery(d) = event {
                    lastTag = d.tag
                    for m in LiveBatch.decode(d.body) { accept(m, into: &out) }
                    if out.count >= 2_000 { break }
                    event = try amqp.nextEvent(timeoutMillis: 0)
                }
                if !out.isEmpty { deliver(out) }
                out = []
                if let lastTag { try amqp.ack(lastTag, multiple: true) }
            } catch {
                if !out.isEmpty { deliver(out) }
                amqpLink.drop(error, "will repair from Redis after reconnecting")
            }
        }
        amqpLink.close { $0.close() }
        redisLink.close { $0.close() }
    }

    /// Hands accepted messages to the hub, after noting how far each channel got.
    private func deliver(_ messages: [SequencedMessage]) {
        watermarks.record(messages)
        hubs.broadcast(.live(messages))
    }

    private func accept(_ m: SequencedMessage, into out: inout [SequencedMessage]) {
        switch tracker.see(m) {
        case .skip:
            return
        case let .repair(after, before):
            repair(channel: m.channel, epoch: m.epoch, after: after, before: before, into: &out)
        case .deliver:
            break
        }
        out.append(m)
    }

    /// Reads the messages between `after` and `before` from Redis; if any is gone, the channel's
    /// subscribers are told to resume (4008) rather than miss it silently.
    private func repair(channel: String, epoch: String, after: UInt64, before: UInt64, into out: inout [SequencedMessage]) {
        let wanted = before - after - 1
        if let snapshot = readSnapshot(channel),
           let filled = LiveGapTracker.fill(snapshot, channel: channel, epoch: epoch, after: after, before: before) {
            out += filled
            metrics.liveGapsRepaired.add()
            logger.warning("repaired a live gap from Redis", metadata: ["channel": "\(channel)", "missing": "\(wanted)"])
            return
        }
        metrics.liveGapsUnrepaired.add()
        logger.error("live gap could not be repaired; subscribers will resume", metadata: ["channel": "\(channel)", "missing": "\(wanted)"])
        if !out.isEmpty { deliver(out); out = [] }
        hubs.broadcast(.broken(channel: channel))
    }

    /// After a reconnect: anything sequenced while this node's queue did not exist is read from Redis.
    private func catchUp() {
        logger.info("live queue reconnected; catching up from Redis")
        var out: [SequencedMessage] = []
        for channel in tracker.channels {
            guard let snapshot = readSnapshot(channel) else { continue }
            switch tracker.catchUp(channel, snapshot: snapshot) {
            case .upToDate:
                break
            case .broken:
                hubs.broadcast(.broken(channel: channel))
            case let .repair(after, before):
                repair(channel: channel, epoch: snapshot.epoch, after: after, before: before, into: &out)
            }
        }
        if !out.isEmpty { deliver(out) }
    }

    private func readSnapshot(_ channel: String) -> HistorySnapshot? {
        guard let redis = redisLink.get(wait: false) else { return nil }
        do {
            return try Scripts.readSnapshots([channel], config: config, on: redis, sha: &sha)[channel]
        } catch {
            sha = nil
            redisLink.drop(error, "the live gap is not repaired")
            return nil
        }
    }
}
