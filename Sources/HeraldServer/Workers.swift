import HeraldAMQP
import HeraldCore
import HeraldRedis
import Logging

/// What other threads send to the WebSocket service thread.
enum HubEvent: Sendable {
    /// Sequenced messages from the live queue, in order, gaps already repaired.
    case live([SequencedMessage])
    /// Messages this node's sequencer has just stored, before their trip through the live
    /// queue: each is appended only where it continues its channel's ring exactly (anything
    /// else is left to the live queue, which repairs gaps), and the copy that then arrives
    /// from the live queue is stale and skipped. Saves local clients a RabbitMQ round trip.
    case local([SequencedMessage])
    /// A channel's sequence broke and could not be repaired: its subscribers must resume.
    case broken(channel: String)
    /// A history read answering the subscribe requests `requests`.
    case history(channel: String, requests: [UInt64], snapshot: HistorySnapshot)
    /// An HTTP history read (token of the waiting request).
    case httpHistory(token: UInt64, result: Result<HistorySnapshot, RedisError>, since: UInt64, limit: Int)
    /// An HTTP publish finished.
    case published(token: UInt64, id: String, ok: Bool, message: String)
}

/// What every worker thread is given: configuration, where its dependencies are, where to report,
/// and when to stop. Subclasses add the thread's own (thread-confined) connections.
class Worker {
    let config: HeraldConfig
    let amqpEndpoint: AMQPEndpoint
    let redisEndpoint: RedisEndpoint
    let inbox: HubInbox
    let health: Health
    let metrics: Metrics
    let logger: Logger
    let stop: StopFlag

    required init(config: HeraldConfig, amqp: AMQPEndpoint, redis: RedisEndpoint, inbox: HubInbox, health: Health,
         metrics: Metrics, logger: Logger, stop: StopFlag) {
        self.config = config
        self.amqpEndpoint = amqp
        self.redisEndpoint = redis
        self.inbox = inbox
        self.health = health
        self.metrics = metrics
        self.logger = logger
        self.stop = stop
    }
}

/// Hands events to the service thread and wakes it.
final class HubInbox: Sendable {
    let mailbox = Mailbox<HubEvent>()
    let wake: @Sendable () -> Void
    init(wake: @escaping @Sendable () -> Void) { self.wake = wake }
    func post(_ event: HubEvent) {
        mailbox.post(event)
        wake()
    }
}

/// Reads channel history for subscribers and for `GET /api/history`. Concurrent requests for one
/// channel share one read.
///
/// - Important: owns Redis connection 2; runs on its own thread.
final class HistoryReader: Worker, @unchecked Sendable {
    enum Request: Sendable {
        case subscribe(channel: String, request: UInt64)
        case http(channel: String, token: UInt64, since: UInt64, limit: Int)
        /// Subscribed channels that have had no message here: extend their empty-channel TTL.
        case keepEmptyAlive(channels: [String])
    }

    let requests = Mailbox<Request>()
    private var redis: RedisConnection?
    private var sha: String?
    private var keepAliveSHA: String?
    private var backoff = Backoff()
    private var everConnected = false

    func run() {
        var waiting: [Request] = []
        var lastHeard = monotonicMicros()
        while !stop.isSet {
            if redis == nil { _ = connect(); lastHeard = monotonicMicros() }
            waiting += requests.take(timeoutMillis: waiting.isEmpty ? 200 : 0)
            guard let redis else { continue } // retry after backoff; requests stay queued
            if waiting.isEmpty {
                // An idle node still notices Redis going away, so /readyz tells the truth.
                if monotonicMicros() - lastHeard >= 1_000_000 {
                    lastHeard = monotonicMicros()
                    if case .failure = Result(catching: { () throws(RedisError) in try redis.command(["PING"]) }) {
                        logger.error("Redis stopped answering (history reader)")
                        redis.close()
                        self.redis = nil
                        health.readerRedis.store(false, ordering: .relaxed)
                    }
                }
                continue
            }
            lastHeard = monotonicMicros()
            var keepAlive: [String] = []
            waiting.removeAll { request in
                guard case let .keepEmptyAlive(channels) = request else { return false }
                keepAlive += channels
                return true
            }
            if !keepAlive.isEmpty { extendEmpty(keepAlive, on: redis) }
            if waiting.isEmpty { continue }
            var channels: [String] = []
            var subscribers: [String: [UInt64]] = [:]
            for r in waiting {
                switch r {
                case let .subscribe(channel, request):
                    if subscribers[channel] == nil { channels.append(channel) }
                    subscribers[channel, default: []].append(request)
                case let .http(channel, _, _, _):
                    if subscribers[channel] == nil { channels.append(channel); subscribers[channel] = [] }
                case .keepEmptyAlive:
                    break
                }
            }
            do {
                let snapshots = try read(channels, on: redis)
                for r in waiting {
                    if case let .http(channel, token, since, limit) = r {
                        inbox.post(.httpHistory(token: token, result: .success(snapshots[channel]!), since: since, limit: limit))
                    }
                }
                for channel in channels where !(subscribers[channel]!.isEmpty) {
                    inbox.post(.history(channel: channel, requests: subscribers[channel]!, snapshot: snapshots[channel]!))
                }
                waiting = []
            } catch {
                logger.error("Redis history read failed; subscribers wait until it is back", metadata: ["error": "\(error)"])
                for r in waiting {
                    if case let .http(_, token, since, limit) = r {
                        inbox.post(.httpHistory(token: token, result: .failure(error), since: since, limit: limit))
                    }
                }
                waiting = waiting.filter { if case .subscribe = $0 { return true } else { return false } }
                redis.close()
                self.redis = nil
                health.readerRedis.store(false, ordering: .relaxed)
            }
        }
        redis?.close()
    }

    private func read(_ channels: [String], on redis: RedisConnection) throws(RedisError) -> [String: HistorySnapshot] {
        try Scripts.readSnapshots(channels, config: config, on: redis, sha: &sha)
    }

    /// One script call per 1,000 channels. A failure is only logged: the hub asks again well
    /// before the TTL runs out, and a connection error shows on the next read.
    private func extendEmpty(_ channels: [String], on redis: RedisConnection) {
        let ttl = Array(String(config.emptyChannelKeySeconds).utf8)
        let calls = stride(from: 0, to: channels.count, by: 1_000).map { start in
            (keys: channels[start..<min(start + 1_000, channels.count)].map { Array(config.metaKey($0).utf8) }, args: [ttl])
        }
        do {
            _ = try Scripts.keepEmptyAlive.run(on: redis, sha: &keepAliveSHA, calls: calls)
        } catch {
            logger.warning("could not extend the TTL of empty channels; retrying at the next round", metadata: ["error": "\(error)"])
        }
    }

    private func connect() -> RedisConnection? {
        let connection = RedisConnection(endpoint: redisEndpoint)
        do {
            try connection.connect()
            redis = connection
            sha = nil
            keepAliveSHA = nil
            backoff.reset()
            health.readerRedis.store(true, ordering: .relaxed)
            if everConnected { metrics.redisReconnects.add(); logger.info("Redis is back (history reader)") }
            everConnected = true
            return connection
        } catch {
            health.readerRedis.store(false, ordering: .relaxed)
            let wait = backoff.next()
            logger.error("cannot reach Redis for history; retrying", metadata: ["error": "\(error)", "retry_ms": "\(wait)"])
            stop.sleep(millis: wait)
            return nil
        }
    }
}

/// Consumes this node's live queue (bound to `<exchange>.live`) and hands sequenced messages
/// to the service thread. A seq that jumps is repaired from Redis first; after a reconnect,
/// every known channel is caught up from Redis, because messages sent while the queue did not
/// exist are gone.
///
/// - Important: owns AMQP connection 2 and Redis connection 3; runs on its own thread.
final class LiveConsumer: Worker, @unchecked Sendable {
    private var amqp: AMQPConnection?
    private var redis: RedisConnection?
    private var sha: String?
    private var backoff = Backoff()
    private var everConnected = false
    /// The newest (epoch, seq) handed on per channel.
    private var last: [String: (epoch: String, seq: UInt64)] = [:]

    func run() {
        while !stop.isSet {
            guard let amqp = connect() else { continue }
            // Messages accepted below have advanced `last`; they must reach the hub even when
            // the connection fails before the batch is complete, or catch-up would skip them.
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
                if !out.isEmpty { inbox.post(.live(out)) }
                out = []
                if let lastTag { try amqp.ack(lastTag, multiple: true) }
            } catch {
                if !out.isEmpty { inbox.post(.live(out)) }
                logger.error("live queue connection lost; will repair from Redis after reconnecting", metadata: ["error": "\(error)"])
                amqp.abandon()
                self.amqp = nil
                health.liveAMQP.store(false, ordering: .relaxed)
                stop.sleep(millis: backoff.next())
            }
        }
        amqp?.close()
        redis?.close()
    }

    private func accept(_ m: SequencedMessage, into out: inout [SequencedMessage]) {
        if let previous = last[m.channel], previous.epoch == m.epoch {
            if m.seq <= previous.seq { return } // a duplicate live copy
            if m.seq > previous.seq + 1 {
                repair(channel: m.channel, epoch: m.epoch, after: previous.seq, before: m.seq, into: &out)
            }
        }
        out.append(m)
        last[m.channel] = (m.epoch, m.seq)
    }

    /// Reads the messages between `after` and `before` from Redis; if any is gone, the channel's
    /// subscribers are told to resume (4008) rather than miss it silently.
    private func repair(channel: String, epoch: String, after: UInt64, before: UInt64, into out: inout [SequencedMessage]) {
        let wanted = before - after - 1
        if let snapshot = readSnapshot(channel), snapshot.epoch == epoch,
           let oldest = snapshot.oldestSeq, oldest <= after + 1 {
            var filled: UInt64 = 0
            for (i, frame) in snapshot.frames.enumerated() {
                let seq = oldest + UInt64(i)
                if seq > after && seq < before {
                    out.append(SequencedMessage(channel: channel, epoch: epoch, seq: seq, frame: frame))
                    filled += 1
                }
            }
            if filled == wanted {
                metrics.liveGapsRepaired.add()
                logger.warning("repaired a live gap from Redis", metadata: ["channel": "\(channel)", "missing": "\(wanted)"])
                return
            }
        }
        metrics.liveGapsUnrepaired.add()
        logger.error("live gap could not be repaired; subscribers will resume", metadata: ["channel": "\(channel)", "missing": "\(wanted)"])
        if !out.isEmpty { inbox.post(.live(out)); out = [] }
        inbox.post(.broken(channel: channel))
    }

    /// After a reconnect: anything sequenced while this node's queue did not exist is read from Redis.
    private func catchUp() {
        var out: [SequencedMessage] = []
        for (channel, previous) in last {
            guard let snapshot = readSnapshot(channel) else { continue }
            if snapshot.epoch != previous.epoch {
                inbox.post(.broken(channel: channel))
                last[channel] = nil
                continue
            }
            if snapshot.seq > previous.seq {
                repair(channel: channel, epoch: previous.epoch, after: previous.seq, before: snapshot.seq + 1, into: &out)
                last[channel] = (previous.epoch, snapshot.seq)
            }
        }
        if !out.isEmpty { inbox.post(.live(out)) }
    }

    private func readSnapshot(_ channel: String) -> HistorySnapshot? {
        for _ in 0..<3 {
            if redis == nil {
                let connection = RedisConnection(endpoint: redisEndpoint)
                do { try connection.connect(); redis = connection; sha = nil } catch { return nil }
            }
            do {
                return try Scripts.readSnapshots([channel], config: config, on: redis!, sha: &sha)[channel]
            } catch {
                redis?.close()
                redis = nil
            }
        }
        return nil
    }

    private func connect() -> AMQPConnection? {
        if let amqp { return amqp }
        let connection = AMQPConnection(endpoint: amqpEndpoint)
        do {
            try connection.connect()
            try Topology.declare(connection, config)
            let queue = try connection.declareQueue("", durable: false, exclusive: true, autoDelete: true)
            try connection.bindQueue(queue, exchange: config.liveExchange)
            try connection.qos(prefetch: 200)
            try connection.consume(queue: queue, exclusive: true)
            amqp = connection
            backoff.reset()
            health.liveAMQP.store(true, ordering: .relaxed)
            if everConnected {
                metrics.amqpReconnects.add()
                logger.info("live queue reconnected; catching up from Redis")
                catchUp()
            }
            everConnected = true
            return connection
        } catch {
            connection.abandon()
            health.liveAMQP.store(false, ordering: .relaxed)
            let wait = backoff.next()
            logger.error("cannot reach RabbitMQ for the live queue; retrying", metadata: ["error": "\(error)", "retry_ms": "\(wait)"])
            stop.sleep(millis: wait)
            return nil
        }
    }
}

/// Publishes `POST /api/publish` bodies to the exchange with publisher confirms.
///
/// - Important: owns AMQP connection 3; runs on its own thread.
final class Publisher: Worker, @unchecked Sendable {
    struct Request: Sendable {
        let token: UInt64
        let channel: String
        let id: String
        let body: [UInt8]
        let contentType: String?
    }

    let requests = Mailbox<Request>()
    private var amqp: AMQPConnection?
    private var backoff = Backoff()
    private var everConnected = false

    func run() {
        while !stop.isSet {
            let amqp = connect()
            let batch = requests.take(timeoutMillis: 200)
            if let amqp {
                // Keep heartbeats serviced while idle.
                if batch.isEmpty {
                    do { _ = try amqp.nextEvent(timeoutMillis: 0) } catch { drop(error) }
                    continue
                }
                do {
                    for r in batch {
                        try amqp.publish(exchange: config.exchange, routingKey: r.channel, body: r.body,
                                         properties: AMQPProperties(contentType: r.contentType, messageID: r.id, persistent: true))
                    }
                    let refused = try amqp.waitForConfirms(timeoutMillis: 5_000)
                    let ok = refused.isEmpty
                    for r in batch {
                        inbox.post(.published(token: r.token, id: r.id, ok: ok, message: ok ? "" : "RabbitMQ refused the message"))
                    }
                    if ok { metrics.httpPublishes.add(batch.count) }
                } catch {
                    for r in batch { inbox.post(.published(token: r.token, id: r.id, ok: false, message: "broker unavailable")) }
                    drop(error)
                }
            } else {
                for r in batch { inbox.post(.published(token: r.token, id: r.id, ok: false, message: "broker unavailable")) }
            }
        }
        amqp?.close()
    }

    private func drop(_ error: Error) {
        logger.error("publisher lost RabbitMQ", metadata: ["error": "\(error)"])
        amqp?.abandon()
        amqp = nil
        health.publisherAMQP.store(false, ordering: .relaxed)
    }

    private var nextAttempt: UInt64 = 0

    private func connect() -> AMQPConnection? {
        if let amqp { return amqp }
        let now = monotonicNanos() / 1_000_000
        guard now >= nextAttempt else { return nil }
        let connection = AMQPConnection(endpoint: amqpEndpoint)
        do {
            try connection.connect()
            try Topology.declare(connection, config)
            try connection.confirmSelect()
            amqp = connection
            backoff.reset()
            health.publisherAMQP.store(true, ordering: .relaxed)
            if everConnected { metrics.amqpReconnects.add() }
            everConnected = true
            return connection
        } catch {
            connection.abandon()
            health.publisherAMQP.store(false, ordering: .relaxed)
            let wait = backoff.next()
            nextAttempt = now + UInt64(wait)
            logger.error("publisher cannot reach RabbitMQ; retrying", metadata: ["error": "\(error)", "retry_ms": "\(wait)"])
            return nil
        }
    }
}
