import CRabbitMQ

/// Wakes a thread waiting in `AMQPConnection.nextEvent(timeoutMillis:wake:)` (an eventfd).
public final class AMQPWake: Sendable {
    let fd: Int32
    public init() { fd = herald_amqp_eventfd() }
    deinit { herald_amqp_eventfd_close(fd) }
    /// Any thread.
    public func signal() { herald_amqp_eventfd_signal(fd) }
}

extension AMQPConnection {
    /// The next delivery or confirm, waiting at most `timeoutMillis` for it or for `wake` to be
    /// signalled (then `.timeout`, and `wake` is cleared): one thread serves a mailbox and this
    /// connection without polling either. Keep `timeoutMillis` under heartbeat/2.
    public func nextEvent(timeoutMillis: Int, wake: AMQPWake) throws(AMQPError) -> AMQPEvent {
        if hasBufferedData { return try nextEvent(timeoutMillis: 0) }
        let c = try conn()
        switch herald_amqp_wait(c, wake.fd, Int32(timeoutMillis)) {
        case 2:
            herald_amqp_eventfd_drain(wake.fd)
            return .timeout
        case 1:
            return try readEvent(timeoutMillis: 0)
        case 0:
            // Lets rabbitmq-c send a heartbeat that is due.
            return try readEvent(timeoutMillis: 0)
        default:
            throw AMQPError("AMQP connection lost: poll failed")
        }
    }
}
