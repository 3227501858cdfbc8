import HeraldRuntime
import HeraldCore
import HeraldRedis
import Logging

/// Brings live messages to this node: it subscribes, in Redis PUB/SUB, to the live topic of each
/// channel a client of this node watches (the scripts that store a message publish it there in
/// the same atomic step) and hands each message only to the service threads that serve a
/// subscriber of its channel. `LiveInterest` decides what to subscribe and when a subscribe's
/// history may be read (after Redis confirmed the topic); `LiveGapTracker` what each message
/// needs: a seq that jumps is repaired from Redis first. PUB/SUB keeps nothing for a node whose
/// connection is gone, so after every new connection each channel is caught up from Redis as
/// soon as its topic is confirmed again, whether or not another message comes.
///
/// - Important: owns the Redis PUB/SUB connection and Redis connection 3 (repairs); runs on its
///   own thread (`herald-live`), which is the only one that touches its state (hence
///   `@unchecked Sendable`).
final class LiveSubscriber: Worker, @unchecked Sendable {
    enum Request: Sendable {
        /// Service thread `hub` subscribes a client to `channel`: read its history (request
        /// `request`) once the channel's topic is confirmed.
        case watch(channel: String, request: UInt64, hub: Int)
        /// Service thread `hub` has no subscriber of `channel` left.
        case unwatch(channel: String, hub: Int)
    }

    /// How long a channel no client watches stays subscribed (a client that comes back at once
    /// finds it still there).
    static let lingerMillis: UInt64 = 10_000
    /// A PING every second; a connection silent for this long is given up and made again.
    static let silenceMillis: UInt64 = 5_000
    static let topicsPerCommand = 1_000

    private let requests = Mailbox<Request>()
    private let wake = RedisWake()
    /// Answers the subscribe requests once their topic is confirmed. Set before the thread starts.
    var historyReader: HistoryReader!

    func post(_ request: Request) {
        requests.post(request)
        wake.signal()
    }

    private lazy var pubsub: Reconnecting<RedisConnection> = {
        let link = makeRedisLink("Redis (live PUB/SUB)", healthy: { [health] in health.liveRedis.store($0, ordering: .relaxed) })
        // Every message stored while this connection is down is missed here (and must come from
        // history): once another connection of this node reaches Redis again, do not wait out
        // the rest of the backoff.
        let sentinelRetry = link.retryNow
        link.retryNow = { [health] in
            sentinelRetry?() == true || health.readerRedis.load(ordering: .relaxed) || health.sequencerRedis.load(ordering: .relaxed)
        }
        return link
    }()
    /// For repairs and catch-ups only. They happen while the PUB/SUB connection is up, so Redis
    /// is too: a repair waits for this connection (its backoff after an outage) rather than
    /// give up on the channel's subscribers.
    private lazy var redisLink = makeRedisLink("Redis (live repairs)")
    private var sha: String?
    private var interest = LiveInterest(lingerMillis: lingerMillis)
    private var tracker = LiveGapTracker()
    /// The PUB/SUB connection `interest` was set up on (0: none).
    private var setUpOn = 0
    private var lastHeard: UInt64 = 0
    private var lastPing: UInt64 = 0
    private var nextExpiry: UInt64 = 0
    /// Channels confirmed again after a lost connection, waiting to be compared with Redis.
    private var catchingUp: [String] = []
    /// Monotonic ms before which no catch-up is tried (the repair connection is not back yet).
    private var nextCatchUp: UInt64 = 0
    /// SUBSCRIBE and UNSUBSCRIBE, or their shard forms on a Redis Cluster (each topic on the
    /// master of its channel's slot).
    private lazy var verbs = config.redisCluster ? (subscribe: "SSUBSCRIBE", unsubscribe: "SUNSUBSCRIBE", message: "smessage", confirmed: "ssubscribe")
                                                 : (subscribe: "SUBSCRIBE", unsubscribe: "UNSUBSCRIBE", message: "message", confirmed: "subscribe")
    /// Compresses each live message once for every connection of the node that negotiated
    /// permessage-deflate (`SequencedMessage.piece`).
    private lazy var pieces = SharedPieces(config: config, metrics: metrics)

    func run() {
        while !stop.isSet {
            guard let redis = pubsub.get(wait: false) else {
                lost()
                var step = LiveInterest.Step()
                for r in requests.take(timeoutMillis: 100) { step.merge(apply(r)) }
                carryOut(step)
                continue
            }
            // Everything handed on below advanced the tracker: it must reach the hubs even when
            // the connection fails part-way.
            var out: [SequencedMessage] = []
            do {
                if setUpOn != pubsub.connectionNumber {
                    lost()
                    setUpOn = pubsub.connectionNumber
                    lastHeard = monotonicMillis()
                    try carryOut(interest.connected(), on: redis)
                }
                var step = LiveInterest.Step()
                for r in requests.drain() { step.merge(apply(r)) }
                let now = monotonicMillis()
                if now >= nextExpiry {
                    nextExpiry = now + 1_000
                    step.merge(interest.expire(nowMillis: now))
                }
                try carryOut(step, on: redis)
                step = LiveInterest.Step()
                let catchUpDue = !catchingUp.isEmpty && monotonicMillis() >= nextCatchUp
                for reply in try redis.receiveAvailable(timeoutMillis: catchUpDue ? 0 : catchingUp.isEmpty ? 200 : 50, wake: wake) {
                    lastHeard = monotonicMillis()
                    received(reply, into: &out, step: &step)
                }
                if !out.isEmpty { deliver(out) }
                out = []
                try carryOut(step, on: redis)
                catchUpSome()
                try keepAlive(redis)
            } catch {
                if !out.isEmpty { deliver(out) }
                pubsub.drop(error, "every watched channel is caught up from Redis once it is back")
                lost()
            }
        }
        pubsub.close { $0.close() }
        redisLink.close { $0.close() }
    }

    private func apply(_ request: Request) -> LiveInterest.Step {
        switch request {
        case let .watch(channel, request, hub):
            return interest.watch(channel, hub: hub, request: request)
        case let .unwatch(channel, hub):
            interest.unwatch(channel, hub: hub, nowMillis: monotonicMillis())
            return LiveInterest.Step()
        }
    }

    /// The connection the interest was set up on is gone: nothing is confirmed any more.
    private func lost() {
        guard setUpOn != 0 else { return }
        setUpOn = 0
        catchingUp = []
        for channel in interest.disconnected() { tracker.forget(channel) }
        metrics.liveChannels.add(interest.count - metrics.liveChannels.current)
    }

    /// Sends the step's SUBSCRIBE and UNSUBSCRIBE commands, then carries out the rest.
    private func carryOut(_ step: LiveInterest.Step, on redis: RedisConnection) throws(RedisError) {
        var commands: [[String]] = []
        for (verb, channels) in [(verbs.subscribe, step.subscribe), (verbs.unsubscribe, step.unsubscribe)] {
            for start in stride(from: 0, to: channels.count, by: Self.topicsPerCommand) {
                let topics = channels[start..<min(start + Self.topicsPerCommand, channels.count)].map { config.liveTopic($0) }
                commands.append([verb] + topics)
            }
        }
        if !commands.isEmpty { try redis.sendCommands(commands) }
        carryOut(step)
    }

    /// Posts the step's history reads, queues its catch-ups and forgets what it unsubscribes
    /// (while disconnected there is nothing to send: the topics are subscribed on connecting).
    private func carryOut(_ step: LiveInterest.Step) {
        guard !step.isEmpty else { return }
        for channel in step.unsubscribe { tracker.forget(channel) }
        for read in step.read {
            historyReader.requests.post(.subscribe(channel: read.channel, request: read.request, hub: read.hub))
        }
        catchingUp += step.catchUp
        metrics.liveChannels.add(interest.count - metrics.liveChannels.current)
    }

    /// One reply on the PUB/SUB connection: a message (its sequenced messages are accepted into
    /// `out`), or the confirmation of a SUBSCRIBE (what it releases goes into `step`).
    private func received(_ reply: RedisReply, into out: inout [SequencedMessage], step: inout LiveInterest.Step) {
        guard case let .array(items) = reply, items.count == 3, let kind = items[0].text,
              let topic = items[1].text, let channel = config.channel(ofLiveTopic: topic) else {
            if case let .error(e) = reply { logger.error("Redis refused a PUB/SUB command", metadata: ["error": "\(e)"]) }
            return
        }
        switch kind {
        case verbs.message:
            guard let body = items[2].bytes else { return }
            let messages = LiveBatch.decode(body)
            metrics.liveReceived.add(messages.count)
            // Sent before an UNSUBSCRIBE took effect: the channel is forgotten.
            guard interest.isConfirmed(channel) else { return }
            for m in messages where m.channel == channel { accept(m, into: &out) }
        case verbs.confirmed:
            step.merge(interest.confirmed(channel))
        default:
            break
        }
    }

    /// Hands accepted messages to the service threads that serve their channels, after noting
    /// how far each channel got.
    private func deliver(_ messages: [SequencedMessage]) {
        watermarks.record(messages)
        var messages = messages
        pieces.compress(&messages)
        var perHub: [Int: [SequencedMessage]] = [:]
        for m in messages {
            for hub in interest.hubs(of: m.channel) { perHub[hub, default: []].append(m) }
        }
        for (hub, list) in perHub { hubs.post(to: hub, .live(list)) }
    }

    private func broken(_ channel: String) {
        for hub in interest.hubs(of: channel) { hubs.post(to: hub, .broken(channel: channel)) }
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
    private func repair(channel: String, epoch: String, after: UInt64, before: UInt64, into out: inout [SequencedMessage],
                        from snapshot: HistorySnapshot? = nil) {
        let wanted = before - after - 1
        if let snapshot = snapshot ?? readSnapshots([channel])?[channel],
           let filled = LiveGapTracker.fill(snapshot, channel: channel, epoch: epoch, after: after, before: before) {
            out += filled
            metrics.liveGapsRepaired.add()
            logger.warning("repaired a live gap from Redis", metadata: ["channel": "\(channel)", "missing": "\(wanted)"])
            return
        }
        metrics.liveGapsUnrepaired.add()
        logger.error("live gap could not be repaired; subscribers will resume", metadata: ["channel": "\(channel)", "missing": "\(wanted)"])
        if !out.isEmpty { deliver(out); out = [] }
        broken(channel)
    }

    /// After a new connection: each confirmed channel is compared with Redis (up to 500 per
    /// round trip), and what was sequenced while the node was not listening is handed on.
    private func catchUpSome() {
        guard !catchingUp.isEmpty else { return }
        guard monotonicMillis() >= nextCatchUp else { return }
        let channels = Array(catchingUp.prefix(500))
        guard let snapshots = readSnapshots(channels) else {
            nextCatchUp = monotonicMillis() + 100 // retried once the repair connection is back
            return
        }
        catchingUp.removeFirst(channels.count)
        var out: [SequencedMessage] = []
        var repaired = 0
        for channel in channels {
            guard let snapshot = snapshots[channel] else { continue }
            switch tracker.catchUp(channel, snapshot: snapshot) {
            case .upToDate:
                break
            case .broken:
                if !out.isEmpty { deliver(out); out = [] }
                broken(channel)
            case let .repair(after, before):
                repaired += 1
                repair(channel: channel, epoch: snapshot.epoch, after: after, before: before, into: &out, from: snapshot)
            case let .seed(after, before):
                out += LiveGapTracker.fill(snapshot, channel: channel, epoch: snapshot.epoch, after: after, before: before) ?? []
            }
        }
        if !out.isEmpty { deliver(out) }
        logger.info("caught up from Redis after the PUB/SUB connection came back",
                    metadata: ["channels": "\(channels.count)", "repaired": "\(repaired)", "left": "\(catchingUp.count)"])
    }

    /// The channels' snapshots; nil when Redis could not be read twice in a row (the second
    /// time on a new connection: the one kept from before an outage may be dead).
    private func readSnapshots(_ channels: [String]) -> [String: HistorySnapshot]? {
        for attempt in 0..<2 {
            guard let redis = redisLink.get() else { return nil } // stopping, or Redis unreachable
            do {
                return try Scripts.readSnapshots(channels, config: config, on: redis, sha: &sha)
            } catch {
                sha = nil
                redisLink.drop(error, attempt == 0 ? "reading again on a new connection" : "the live gap is not repaired")
            }
        }
        return nil
    }

    /// A PING each second; a connection that has said nothing for `silenceMillis` is given up.
    private func keepAlive(_ redis: RedisConnection) throws(RedisError) {
        let now = monotonicMillis()
        if now - lastHeard >= Self.silenceMillis {
            throw RedisError("the PUB/SUB connection has been silent for \(Self.silenceMillis) ms")
        }
        if now - lastPing >= 1_000 {
            lastPing = now
            try redis.sendCommands([["PING"]])
        }
    }
}

extension LiveInterest.Step {
    mutating func merge(_ other: LiveInterest.Step) {
        subscribe += other.subscribe
        unsubscribe += other.unsubscribe
        read += other.read
        catchUp += other.catchUp
    }
}
