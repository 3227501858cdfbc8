import HeraldAMQP
import HeraldCore

/// The RabbitMQ objects every node declares (idempotent, so any node may start first).
///
/// With `--partitions 1` (the default): the fanout exchange feeds `<exchange>.history`. With N
/// partitions: the fanout exchange is bound to the consistent-hash exchange
/// `<exchange>.partitions` (plugin `rabbitmq_consistent_hash_exchange`), which hashes each
/// message's routing key (its channel) to one of `<exchange>.history.0` … `.<N-1>`, every one
/// single-active-consumer. The hash exchange carries `x-herald-partitions: N` as an argument, so
/// a node started with another N cannot declare it (406) and never sequences beside this one.
enum Topology {
    static func declare(_ amqp: AMQPConnection, _ config: HeraldConfig) throws(AMQPError) {
        try amqp.declareExchange(config.exchange, type: "fanout", durable: true)
        // Classic is RabbitMQ's default: leave the argument out so queues declared by older
        // versions (without it) stay equivalent.
        let type: [(String, AMQPArgument)] = config.queueType == "classic" ? [] : [("x-queue-type", .string(config.queueType))]
        let single: [(String, AMQPArgument)] = [("x-single-active-consumer", .bool(true))]
        if config.partitions == 1 {
            try amqp.declareQueue(config.historyQueue, durable: true, arguments: single + type)
            try amqp.bindQueue(config.historyQueue, exchange: config.exchange)
        } else {
            try amqp.declareExchange(config.partitionExchange, type: "x-consistent-hash", durable: true,
                                     arguments: [("x-herald-partitions", .int(Int64(config.partitions)))])
            try amqp.bindExchange(config.partitionExchange, to: config.exchange)
            for queue in config.historyQueues {
                try amqp.declareQueue(queue, durable: true, arguments: single + type)
                // The binding key of a consistent-hash exchange is the queue's weight: all equal.
                try amqp.bindQueue(queue, exchange: config.partitionExchange, routingKey: "1")
            }
        }
        try amqp.declareQueue(config.deadQueue, durable: true, arguments: type)
    }
}
