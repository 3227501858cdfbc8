import HeraldAMQP
import HeraldRuntime

extension Sequencer {
    /// A sequencer is its queue's active consumer while deliveries (its probes at least, every
    /// 2 s) reach it.
    static let activeWithinMillis: UInt64 = 5_000
    /// How long a partition given up waits before consuming again (at the back of the queue's
    /// waiting consumers).
    static let rejoinAfterMillis: UInt64 = 3_000

    /// With partitions: tells the node's ledger whether this partition is active here, and gives
    /// it up when the node holds more than its share (then true: the connection is gone).
    func balance(_ amqp: AMQPConnection, nowMillis now: UInt64) throws(AMQPError) -> Bool {
        guard let ledger else { return false }
        let active = lastDeliveryMillis > 0 && now - lastDeliveryMillis < Self.activeWithinMillis
        guard ledger.update(partition, active: active, nowMillis: now) else { return false }
        try handOff(amqp)
        return true
    }

    /// Gives the partition up cleanly: what was taken is stored and acked first, so the node
    /// that takes over starts after the last message stored here (deliveries read but not yet
    /// staged go back to the queue unacked, never stored here); then the consumer goes away with
    /// its connection, RabbitMQ activates the next waiting consumer, and this one rejoins later.
    private func handOff(_ amqp: AMQPConnection) throws(AMQPError) {
        if let ready = staged {
            staged = nil
            guard try finish(ready, amqp) else { return }
        }
        if !pipeline.inFlight.isEmpty {
            try failIfRefused(amqp.waitForConfirms(timeoutMillis: Int(pipeline.confirmTimeoutMillis)))
            try ackConfirmed(amqp)
        }
        pipeline.connectionLost()
        lastDeliveryMillis = 0
        amqpLink.release(pauseMillis: Self.rejoinAfterMillis,
                         "gave partition \(partition) up (this node held more than its share); consuming again later")
    }
}
