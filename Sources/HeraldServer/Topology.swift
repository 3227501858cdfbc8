import HeraldAMQP
import HeraldCore

/// The RabbitMQ objects every node declares (idempotent, so any node may start first).
enum Topology {
    static func declare(_ amqp: AMQPConnection, _ config: HeraldConfig) throws(AMQPError) {
        try amqp.declareExchange(config.exchange, type: "fanout", durable: true)
        // Classic is RabbitMQ's default: leave the argument out so queues declared by older
        // versions (without it) stay equivalent.
        let type: [(String, AMQPArgument)] = config.queueType == "classic" ? [] : [("x-queue-type", .string(config.queueType))]
        try amqp.declareQueue(config.historyQueue, durable: true, arguments: [("x-single-active-consumer", .bool(true))] + type)
        try amqp.bindQueue(config.historyQueue, exchange: config.exchange)
        try amqp.declareQueue(config.deadQueue, durable: true, arguments: type)
    }
}
