import CRabbitMQ

/// Exchanges, queues and bindings.
extension AMQPConnection {
    /// Declares an exchange; `arguments` are part of its identity: declaring it again with
    /// others fails (406 PRECONDITION_FAILED).
    public func declareExchange(_ name: String, type: String, durable: Bool = true, isInternal: Bool = false,
                                arguments: [(String, AMQPArgument)] = []) throws(AMQPError) {
        let c = try conn()
        AMQPCodec.withTable(arguments) { table in
            name.withCString { n in
                type.withCString { t in
                    _ = amqp_exchange_declare(c, channel, amqp_cstring_bytes(n), amqp_cstring_bytes(t), 0,
                                              durable ? 1 : 0, 0, isInternal ? 1 : 0, table)
                }
            }
        }
        try check(amqp_get_rpc_reply(c), "exchange.declare \(name)")
    }

    /// Declares a queue; an empty name asks the broker for one. Returns the queue's name.
    @discardableResult
    public func declareQueue(_ name: String, durable: Bool, exclusive: Bool = false, autoDelete: Bool = false,
                             arguments: [(String, AMQPArgument)] = []) throws(AMQPError) -> String {
        let c = try conn()
        var result = ""
        AMQPCodec.withTable(arguments) { table in
            name.withCString { n in
                if let ok = amqp_queue_declare(c, channel, amqp_cstring_bytes(n), 0, durable ? 1 : 0,
                                               exclusive ? 1 : 0, autoDelete ? 1 : 0, table) {
                    result = AMQPCodec.string(ok.pointee.queue)
                }
            }
        }
        try check(amqp_get_rpc_reply(c), "queue.declare \(name)")
        return result
    }

    /// A queue's ready messages and consumers (a passive declare: the queue is not created; a
    /// missing one is an error that closes the channel).
    public func queueStatus(_ name: String) throws(AMQPError) -> (messages: Int, consumers: Int) {
        let c = try conn()
        var status = (messages: 0, consumers: 0)
        name.withCString { n in
            if let ok = amqp_queue_declare(c, channel, amqp_cstring_bytes(n), 1, 0, 0, 0, amqp_empty_table) {
                status = (Int(ok.pointee.message_count), Int(ok.pointee.consumer_count))
            }
        }
        try check(amqp_get_rpc_reply(c), "queue.declare (passive) \(name)")
        return status
    }

    public func bindQueue(_ queue: String, exchange: String, routingKey: String = "") throws(AMQPError) {
        try binding(queue, exchange, routingKey, "queue.bind \(queue) to \(exchange)") { c, ch, q, e, r in
            _ = amqp_queue_bind(c, ch, q, e, r, amqp_empty_table)
        }
    }

    public func unbindQueue(_ queue: String, from exchange: String, routingKey: String = "") throws(AMQPError) {
        try binding(queue, exchange, routingKey, "queue.unbind \(queue) from \(exchange)") { c, ch, q, e, r in
            _ = amqp_queue_unbind(c, ch, q, e, r, amqp_empty_table)
        }
    }

    /// Binds exchange `destination` to `source`: what `source` routes also goes to `destination`,
    /// routing key unchanged.
    public func bindExchange(_ destination: String, to source: String, routingKey: String = "") throws(AMQPError) {
        try binding(destination, source, routingKey, "exchange.bind \(destination) to \(source)") { c, ch, d, s, r in
            _ = amqp_exchange_bind(c, ch, d, s, r, amqp_empty_table)
        }
    }

    public func unbindExchange(_ destination: String, from source: String, routingKey: String = "") throws(AMQPError) {
        try binding(destination, source, routingKey, "exchange.unbind \(destination) from \(source)") { c, ch, d, s, r in
            _ = amqp_exchange_unbind(c, ch, d, s, r, amqp_empty_table)
        }
    }

    /// One binding method on (destination, source, routing key), then its reply checked.
    private func binding(_ destination: String, _ source: String, _ routingKey: String, _ what: String,
                         _ method: (amqp_connection_state_t, amqp_channel_t, amqp_bytes_t, amqp_bytes_t, amqp_bytes_t) -> Void) throws(AMQPError) {
        let c = try conn()
        destination.withCString { d in
            source.withCString { s in
                routingKey.withCString { r in method(c, channel, amqp_cstring_bytes(d), amqp_cstring_bytes(s), amqp_cstring_bytes(r)) }
            }
        }
        try check(amqp_get_rpc_reply(c), what)
    }

    public func deleteQueue(_ name: String) throws(AMQPError) {
        let c = try conn()
        name.withCString { n in _ = amqp_queue_delete(c, channel, amqp_cstring_bytes(n), 0, 0) }
        try check(amqp_get_rpc_reply(c), "queue.delete \(name)")
    }

    public func deleteExchange(_ name: String) throws(AMQPError) {
        let c = try conn()
        name.withCString { n in _ = amqp_exchange_delete(c, channel, amqp_cstring_bytes(n), 0) }
        try check(amqp_get_rpc_reply(c), "exchange.delete \(name)")
    }

    /// A queue's ready messages and consumers, or nil when it does not exist (the channel the
    /// broker closed for the miss is opened again).
    public func queueStatusIfExists(_ name: String) throws(AMQPError) -> (messages: Int, consumers: Int)? {
        do {
            return try queueStatus(name)
        } catch where error.replyCode == 404 {
            try reopenChannel()
            return nil
        }
    }
}
