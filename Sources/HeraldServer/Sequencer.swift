import HeraldAMQP
import HeraldRuntime
import HeraldCore
import HeraldRedis
import Logging

/// A sequencer thread: consumes `<exchange>.history` (single active consumer; with
/// `--partitions N`, one thread per partition, each on its own `<exchange>.history.<p>` with its
/// own AMQP and Redis connections, so partitions are sequenced in parallel) and stores each
/// batch through the `sequence` script, one call for the whole batch, which also publishes
/// every message on its channel's live topic in Redis (so the nodes serving its subscribers
/// get it; RabbitMQ carries a message once). A channel whose keys Redis refuses has its
/// messages sent to `<exchange>.dead` with a confirm. The deliveries are acked (one
/// multiple-ack per batch) once Redis stored them (and held them on the replicas with
/// `--redis-wait-replicas`) and their dead letters are confirmed.
///
/// Batches are pipelined: while Redis runs one batch's script the next batch is read from
/// RabbitMQ; up to `maxInFlight` batches wait for their dead letters' confirms.
///
/// - Important: owns AMQP connection 1 and Redis connection 1; runs on its own thread
///   (`herald-seq`), which is the only one that touches its state (hence `@unchecked Sendable`).
final class Sequencer: Worker, @unchecked Sendable {
    /// The partition this sequencer consumes (`--partitions`; set before `run`): its queue.
    var partition = 0
    /// The node's partitions (with `--partitions` > 1): whether this one should be given up.
    var ledger: PartitionLedger?
    /// Monotonic ms of this sequencer's last delivery (its own probes included): recent means
    /// it is its queue's active consumer.
    var lastDeliveryMillis: UInt64 = 0
    private var queue: String { config.historyQueue(partition: partition) }
    lazy var amqpLink = makeAMQPLink(config.partitions == 1 ? "RabbitMQ (sequencer)" : "RabbitMQ (sequencer of partition \(partition))",
                                         healthy: { [health] in health.sequencerAMQP.store($0, ordering: .relaxed) }) { [config, logger, queue] connection throws(AMQPError) in
        try connection.qos(prefetch: config.prefetch)
        try connection.confirmSelect()
        try connection.consume(queue: queue)
        logger.info("sequencer consuming", metadata: ["queue": "\(queue)"])
    }
    private lazy var redisLink = makeRedisLink("Redis (sequencer; not consuming until it is back)",
                                           healthy: { [health] in health.sequencerRedis.store($0, ordering: .relaxed) })
    var redis: RedisConnection? { redisLink.current }
    private var scriptSHA: String?
    private var presenceSHA: String?
    private var lastProbe: UInt64 = 0

    /// Batches stored, waiting for their dead letters' confirms before their ack.
    var pipeline = SequencerPipeline(maxInFlight: 4, confirmTimeoutMillis: 10_000)

    /// A batch whose script calls were sent to Redis; its replies are read after the next
    /// batch was collected from RabbitMQ, so Redis works while this thread reads.
    struct Staged {
        var deliveries: [AMQPDelivery]
        /// The batch's `sequence` calls (none when it holds no message to store).
        var calls: [(keys: [[UInt8]], args: [[UInt8]])]
        /// How many groups each call holds (one call, or one per hash slot on a Redis Cluster).
        var callSizes: [Int]
        /// Each channel's part of the call, and the deliveries it came from.
        var groups: [StoreGroup]
        var groupDeliveries: [[AMQPDelivery]]
        /// Presence changes (`PresenceChange`), one script call each, run after the messages.
        var presence: [(stream: String, call: (keys: [[UInt8]], args: [[UInt8]]), delivery: AMQPDelivery)] = []
        var dead: [(AMQPDelivery, EnvelopeError)]
        /// The connection the calls went out on; nil when the send failed. Replies are read
        /// only from it: if the link has moved since (the Redis master changed), the batch is
        /// stored again on the new connection instead.
        var sentOn: Int?
    }
    var staged: Staged?

    func run() {
        while !stop.isSet {
            guard let amqp = amqpLink.get() else { continue }
            guard redisLink.get() != nil else { continue }
            // This node's live connection is down (Redis was restarted, or cut it off): what is
            // stored now reaches its clients only through history, so wait for it (a moment:
            // it reconnects as soon as Redis answers) rather than run past the history size.
            if !health.liveRedis.load(ordering: .relaxed) {
                stop.sleep(millis: 20)
                continue
            }
            do {
                if try probeIfDue(amqp) { continue } // gave its partition up
                try ackConfirmed(amqp)
                if pipeline.isFull && staged == nil, let oldest = pipeline.oldestPublish {
                    // The pipeline is full: wait for the oldest batch's confirm.
                    try failIfRefused(amqp.waitForConfirms(through: oldest, timeoutMillis: Int(pipeline.confirmTimeoutMillis)))
                    continue
                }
                // With a batch in Redis, take only what has already arrived, then finish that batch.
                let batch = try collect(amqp, timeoutMillis: staged == nil ? 100 : 0)
                if let ready = staged {
                    staged = nil
                    guard try finish(ready, amqp) else { continue } // stopping
                }
                if !batch.isEmpty { staged = stage(batch) }
            } catch {
                if staged != nil {
                    // Its replies are still on the Redis connection: start that one afresh too.
                    staged = nil
                    dropRedis(error)
                }
                pipeline.connectionLost()
                amqpLink.drop(error, "unacknowledged messages will be delivered again")
            }
        }
        // Stopping: ack what RabbitMQ confirms within a second; the rest is delivered again.
        if let amqp = amqpLink.current, !pipeline.inFlight.isEmpty {
            do {
                try failIfRefused(amqp.waitForConfirms(timeoutMillis: 1_000))
                try ackConfirmed(amqp)
            } catch {
                logger.warning("stopping with unconfirmed batches; RabbitMQ will deliver them again", metadata: ["error": "\(error)"])
            }
        }
        amqpLink.close { $0.close() }
        redisLink.close { $0.close() }
    }

    /// Up to `batchSize` deliveries: waits `timeoutMillis` for the first, then takes what is buffered.
    private func collect(_ amqp: AMQPConnection, timeoutMillis: Int) throws(AMQPError) -> [AMQPDelivery] {
        var batch: [AMQPDelivery] = []
        var event = try amqp.nextEvent(timeoutMillis: timeoutMillis)
        while true {
            switch event {
            case let .delivery(d):
                batch.append(d)
                if batch.count >= config.batchSize { return batch }
            case .confirm, .returned, .blocked, .unblocked:
                // Confirms are settled inside the connection and acked at the top of the loop;
                // the sequencer publishes nothing mandatory, and a blocked connection shows as
                // confirms that wait.
                if batch.isEmpty && timeoutMillis > 0 { return batch }
            case .timeout:
                return batch
            }
            event = try amqp.nextEvent(timeoutMillis: 0)
        }
    }

    /// Acks every in-flight batch whose publishes are all confirmed, oldest first, with one
    /// multiple-ack for the newest of them.
    func ackConfirmed(_ amqp: AMQPConnection) throws(AMQPError) {
        try failIfRefused(amqp.takeRefused())
        guard !pipeline.inFlight.isEmpty else { return }
        for action in pipeline.settle(through: amqp.settledThrough, nowMillis: monotonicMillis()) {
            switch action {
            case let .ack(delivery, batches, deadLettered):
                try amqp.ack(delivery, multiple: true)
                metrics.deadLettered.add(deadLettered)
                metrics.sequencerBatches.add(batches)
            case let .fail(reason):
                throw AMQPError(reason)
            }
        }
    }

    func failIfRefused(_ refused: Set<UInt64>) throws(AMQPError) {
        if !refused.isEmpty {
            throw AMQPError("RabbitMQ refused \(refused.count) live/dead-letter publishes")
        }
    }

    /// Every node sends itself a probe through the history queue every 2 s. Only the active
    /// consumer receives probes, so receiving any delivery means "this node is the sequencer".
    /// True when the partition was given up (`balance`): the connection is gone.
    private func probeIfDue(_ amqp: AMQPConnection) throws(AMQPError) -> Bool {
        let now = monotonicNanos() / 1_000_000
        guard now - lastProbe >= 2_000 else { return false }
        lastProbe = now
        try amqp.publish(exchange: "", routingKey: queue, body: [],
                     properties: AMQPProperties(headers: [("x-herald-probe", config.nodeID)]))
        return try balance(amqp, nowMillis: now)
    }

    /// Turns deliveries into one `sequence` call (or dead letters) and sends it to Redis.
    private func stage(_ deliveries: [AMQPDelivery]) -> Staged {
        lastDeliveryMillis = monotonicNanos() / 1_000_000
        health.lastHistoryDelivery.store(Int(lastDeliveryMillis), ordering: .relaxed)
        let now = wallMillis()
        var groups: [StoreGroup] = []
        var groupDeliveries: [[AMQPDelivery]] = []
        var groupIndex: [String: Int] = [:]
        var dead: [(AMQPDelivery, EnvelopeError)] = []
        var presence: [(stream: String, call: (keys: [[UInt8]], args: [[UInt8]]), delivery: AMQPDelivery)] = []
        for d in deliveries {
            if d.properties.header("x-herald-probe") != nil { continue }
            if let instance = d.properties.header("x-herald-presence") {
                switch presenceCall(d, instance: instance) {
                case let .success(call): presence.append((d.routingKey, call, d))
                case let .failure(error): dead.append((d, error))
                }
                continue
            }
            let channel = d.routingKey.isEmpty ? config.defaultChannel : d.routingKey
            if let problem = Admission.check(channel: channel, bodySize: d.body.count, maxBytes: config.maxMessageBytes) {
                dead.append((d, problem))
                continue
            }
            let publisherID = d.properties.messageID.flatMap { $0.isEmpty ? nil : $0 }
            do {
                let envelope = try MessageEnvelope(channel: channel, id: publisherID ?? "\(config.nodeID)-\(randomHex(bytes: 8))",
                                                   timeMillis: now, body: d.body,
                                                   contentType: d.properties.contentType)
                let g = groupIndex[channel] ?? {
                    groups.append(StoreGroup(channel: channel))
                    groupDeliveries.append([])
                    groupIndex[channel] = groups.count - 1
                    return groups.count - 1
                }()
                groupDeliveries[g].append(d)
                groups[g].envelopes.append(envelope)
                groups[g].publisherIDs.append(publisherID)
            } catch {
                dead.append((d, error))
            }
        }
        let plan = Scripts.sequencePlan(groups.map(\.channel), config: config)
        if config.redisCluster {
            groups = plan.order.map { groups[$0] }
            groupDeliveries = plan.order.map { groupDeliveries[$0] }
        }
        let calls = Scripts.sequenceCalls(groups, sizes: plan.sizes, marks: watermarks.marks(groups.map(\.channel)), config: config)
        var sentOn: Int?
        if !calls.isEmpty, let redis {
            do {
                try Scripts.sequence.send(on: redis, sha: &scriptSHA, calls: calls)
                sentOn = redisLink.connectionNumber
            } catch {
                dropRedis(error)
            }
        }
        return Staged(deliveries: deliveries, calls: calls, callSizes: plan.sizes, groups: groups, groupDeliveries: groupDeliveries,
                      presence: presence, dead: dead, sentOn: sentOn)
    }

    /// Reads the staged batch's replies (or, after a Redis error, stores it again until Redis
    /// answers), dead-letters what Redis refused and puts the batch in flight. False: stopping.
    func finish(_ batch: Staged, _ amqp: AMQPConnection) throws(AMQPError) -> Bool {
        let calls = batch.calls, deliveries = batch.deliveries
        var dead = batch.dead
        // Redis first: retried until it answers (messages wait, unacked, in RabbitMQ meanwhile).
        var sequenced: [SequencedMessage] = []
        if !calls.isEmpty {
            var replies: [RedisReply]?
            if let redis, batch.sentOn == redisLink.connectionNumber {
                do {
                    replies = try Scripts.sequence.receive(on: redis, sha: &scriptSHA, calls: calls)
                } catch {
                    dropRedis(error)
                }
            }
            if replies == nil { replies = storeInRedis(calls) }
            if config.redisWaitReplicas > 0, let stored = replies { replies = replicated(calls, stored) }
            guard let replies else { return false } // stopping: RabbitMQ redelivers
            // One answer per channel; an error for the whole call is every channel's answer.
            let perChannel = Scripts.sequenceReplies(replies, sizes: batch.callSizes)
            for (g, (group, reply)) in zip(batch.groups, perChannel).enumerated() {
                let answer = Scripts.sequenced(reply, count: group.envelopes.count)
                if let answer { reportIfBehind(group.channel, answer) }
                let outcome = SequencerPipeline.stored(channel: group.channel,
                                                       sequenced: answer.map { ($0.epoch, $0.messages) },
                                                       reply: "\(reply)", newFrame: { group.envelopes[$0].frame(seq: $1) })
                switch outcome {
                case let .publish(messages, duplicates):
                    metrics.messagesIn.add(messages.count - duplicates)
                    metrics.duplicates.add(duplicates)
                    metrics.channelActivity.add(group.channel, messages.count - duplicates)
                    sequenced += messages
                case let .deadLetter(reason):
                    // Redis refused this channel's batch (for example a key of the wrong type):
                    // its messages go to the dead-letter queue with the reason, never dropped.
                    logger.error("sequence script failed; dead-lettering the channel's batch",
                                 metadata: ["channel": "\(group.channel)", "reply": "\(reply)"])
                    let error = EnvelopeError(code: .storeFailed, message: reason)
                    dead += batch.groupDeliveries[g].map { ($0, error) }
                }
            }
        }

        if !batch.presence.isEmpty {
            // After the messages, on their own: one call per change, retried until Redis answers.
            let calls = batch.presence.map(\.call)
            guard var replies = storeInRedis(calls, script: Scripts.presence, sha: \.presenceSHA) else { return false }
            // Held for the replicas as messages are (--redis-wait-replicas): a join or leave
            // clients were told of survives a failover.
            if config.redisWaitReplicas > 0 {
                guard let held = replicated(calls, replies, script: Scripts.presence, sha: \.presenceSHA) else { return false }
                replies = held
            }
            for (p, reply) in zip(batch.presence, replies) {
                if let frames = Scripts.presenceFrames(reply, stream: p.stream) {
                    sequenced += frames
                    metrics.presenceChanges.add(frames.count)
                } else {
                    logger.error("presence script failed; dead-lettering the change", metadata: ["stream": "\(p.stream)", "reply": "\(reply)"])
                    dead.append((p.delivery, EnvelopeError(code: .storeFailed, message: "Redis refused the presence change: \(reply)")))
                }
            }
        }

        // The scripts published every message to the nodes that serve its channel.
        watermarks.record(sequenced)
        try publishDeadLetters(dead, amqp)
        pipeline.published(SequencerPipeline.Batch(lastDelivery: deliveries.last!.tag, lastPublish: amqp.lastPublishTag,
                                                   deadLettered: dead.count, publishedAtMillis: monotonicMillis()))
        return true
    }

    private func storeInRedis(_ calls: [(keys: [[UInt8]], args: [[UInt8]])]) -> [RedisReply]? {
        storeInRedis(calls, script: Scripts.sequence, sha: \.scriptSHA)
    }

    private func storeInRedis(_ calls: [(keys: [[UInt8]], args: [[UInt8]])], script: RedisScript,
                              sha: ReferenceWritableKeyPath<Sequencer, String?>) -> [RedisReply]? {
        while !stop.isSet {
            guard let redis = redisLink.get() else { continue }
            var digest = self[keyPath: sha]
            do {
                let replies = try script.run(on: redis, sha: &digest, calls: calls)
                self[keyPath: sha] = digest
                return replies
            } catch {
                dropRedis(error)
            }
        }
        return nil
    }

    /// With `--redis-wait-replicas N`: returns once N replicas hold the batch (Redis `WAIT`), with
    /// the replies to go on with. A connection that fails meanwhile (the master died or was
    /// demoted) may have taken the batch with it: it is stored again on the master found next
    /// (publisher ids are de-duplicated there) and waited for again. nil: stopping.
    private func replicated(_ calls: [(keys: [[UInt8]], args: [[UInt8]])], _ stored: [RedisReply], script: RedisScript = Scripts.sequence,
                            sha: ReferenceWritableKeyPath<Sequencer, String?> = \.scriptSHA) -> [RedisReply]? {
        var replies = stored
        var heldSeconds = 0
        while !stop.isSet {
            if let redis = redisLink.get() {
                do {
                    let wanted = config.redisWaitReplicas
                    let acked = try redis.waitReplicas(wanted, timeoutMillis: 1_000)
                    if acked >= wanted { return replies }
                    heldSeconds += 1
                    metrics.redisReplicaWaits.add()
                    if heldSeconds == 1 || heldSeconds % 10 == 0 {
                        logger.warning("holding a batch until enough replicas have it (--redis-wait-replicas)",
                                       metadata: ["replicas": "\(acked)", "wanted": "\(wanted)", "held_s": "\(heldSeconds)"])
                    }
                    continue
                } catch {
                    dropRedis(error)
                }
            }
            guard let again = storeInRedis(calls, script: script, sha: sha) else { return nil }
            replies = again
        }
        return nil
    }

    /// A Redis write failed: the batch is held and stored again on the next connection.
    private func dropRedis(_ error: any Error) {
        scriptSHA = nil
        presenceSHA = nil
        redisLink.drop(error, "holding the batch and retrying")
    }
}
