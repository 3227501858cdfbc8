import HeraldAMQP
import HeraldCore
import HeraldRedis
import HeraldRuntime

/// Poison messages: to `<exchange>.dead` with the reason, never dropped, and counted once.
extension Sequencer {
    /// Publishes each dead letter with its reason (`x-herald-error`) and original routing key.
    func publishDeadLetters(_ dead: [(AMQPDelivery, EnvelopeError)], _ amqp: AMQPConnection) throws(AMQPError) {
        let firstTime = firstTimeDead(dead.map { $0.0.properties.messageID })
        for ((d, error), first) in zip(dead, firstTime) {
            var headers = d.properties.headers.filter { $0.0 != "x-herald-error" }
            headers.append(("x-herald-error", error.header))
            headers.append(("x-herald-routing-key", d.routingKey))
            try amqp.publish(exchange: "", routingKey: config.deadQueue, body: d.body,
                         properties: AMQPProperties(contentType: d.properties.contentType, messageID: d.properties.messageID,
                                                    persistent: true, headers: headers))
            if first { metrics.countDeadLetter(error, channel: d.routingKey, messageID: d.properties.messageID, atMillis: wallMillis()) }
            logger.warning("dead-lettered a message", metadata: ["channel": "\(d.routingKey.prefix(200))", "error": "\(error.header)"])
        }
    }

    /// Which dead letters are counted (`herald_dead_letters_by_reason_total`, the admin page's
    /// list): once per message id, so a batch redelivered after a crash between its dead-letter
    /// publish and its ack (or a publisher's retry of a poison message) is not counted twice. The
    /// ids are remembered in Redis for a day (`<prefix>:dead:<id>`), across nodes and restarts;
    /// a message without an id, or a Redis that does not answer, is counted.
    func firstTimeDead(_ ids: [String?]) -> [Bool] {
        let keyed = ids.enumerated().compactMap { i, id in id.map { (i, config.redisPrefix + ":dead:" + $0) } }
        var first = [Bool](repeating: true, count: ids.count)
        guard !keyed.isEmpty, let redis else { return first }
        guard let replies = try? redis.pipeline(keyed.map { ["SET", $0.1, "1", "NX", "PX", "86400000"].map { Array($0.utf8) } }) else { return first }
        for ((i, _), reply) in zip(keyed, replies) where reply == .null { first[i] = false }
        return first
    }

}
