import HeraldAMQP
import HeraldCore
import HeraldRedis

/// `--partitions` is one setting for the whole cluster: two nodes that split channels
/// differently would sequence a channel twice. The count is recorded in Redis at the first start
/// (`<prefix>:partitions`; a deployment from before it existed counts as 1 when its
/// `<exchange>.history` queue exists), and a node started with another count refuses to start.
///
/// Changing it (`--repartition`, on one node, with every other node stopped): the old history
/// queues must be empty and unconsumed; then the old topology is removed (its queues, and the
/// hash exchange or the old queue's binding), the new count recorded, and the node starts.
enum Partitions {
    /// Why this node may not start with its `--partitions`, or nil. Redis or RabbitMQ being
    /// unreachable is not a reason (the node starts and rides the outage out; with N > 1 the
    /// hash exchange's `x-herald-partitions` argument still refuses a mismatch).
    static func conflict(config: HeraldConfig, locator: RedisLocator, amqp endpoints: [AMQPEndpoint], repartition: Bool) -> String? {
        guard let redis = try? locator.connect() else { return nil }
        defer { redis.close() }
        let key = config.partitionsKey
        guard let stored = try? redis.command(["GET", key]) else { return nil }
        var recorded = stored.text.flatMap { Int($0) }
        let wanted = config.partitions
        // RabbitMQ is asked only when it matters (the default start does not wait for it).
        var connection: AMQPConnection?
        defer { connection?.close() }
        func amqp() -> AMQPConnection? {
            if connection == nil { connection = try? AMQPCluster(endpoints: endpoints).connect() }
            return connection
        }
        if recorded == nil, wanted > 1, let amqp = amqp(), (try? amqp.queueStatusIfExists(config.historyQueue)) ?? nil != nil {
            recorded = 1 // sequenced by a version from before partitions
        }
        if let recorded, recorded != wanted {
            guard repartition else {
                return "this cluster sequences \(config.exchange) in \(recorded) partition(s) (Redis key \(key)); this node was started with "
                    + "--partitions \(wanted). Start it with --partitions \(recorded), or change the cluster's count: stop every node, "
                    + "then start one with --partitions \(wanted) --repartition (it checks that nothing is left to sequence)"
            }
            guard let amqp = amqp() else { return "--repartition needs RabbitMQ: it could not be reached" }
            if let problem = dismantle(recorded, config: config, amqp) { return problem }
        }
        guard (try? redis.command(["SET", key, String(wanted)])) != nil else { return nil }
        return nil
    }

    /// Removes the topology of `count` partitions if its queues are drained; else why not.
    private static func dismantle(_ count: Int, config: HeraldConfig, _ amqp: AMQPConnection) -> String? {
        var old = config
        old.partitions = count
        do {
            for queue in old.historyQueues {
                guard let status = try amqp.queueStatusIfExists(queue) else { continue }
                if status.consumers > 0 {
                    return "cannot repartition: \(queue) has \(status.consumers) consumer(s); stop every other node first"
                }
                if status.messages > 0 {
                    return "cannot repartition: \(queue) still holds \(status.messages) message(s) to sequence; start the nodes with --partitions \(count) until it is empty"
                }
            }
            if count == 1 {
                try amqp.unbindQueue(old.historyQueue, from: old.exchange)
            } else {
                try amqp.deleteExchange(old.partitionExchange)
            }
            for queue in old.historyQueues where try amqp.queueStatusIfExists(queue) != nil { try amqp.deleteQueue(queue) }
            return nil
        } catch {
            return "cannot repartition: \(error)"
        }
    }
}
