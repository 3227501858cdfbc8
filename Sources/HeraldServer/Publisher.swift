import HeraldAMQP
import HeraldRuntime
import HeraldCore
import Logging

/// Publishes `POST /api/publish` bodies to the exchange with publisher confirms.
///
/// - Important: owns AMQP connection 3; runs on its own thread (`herald-publish`), which is the
///   only one that touches its state (hence `@unchecked Sendable`).
final class Publisher: Worker, @unchecked Sendable {
    struct Request: Sendable {
        /// The service thread that waits for the answer, and its token there.
        let hub: Int
        let token: UInt64
        let channel: String
        let id: String
        let body: [UInt8]
        let contentType: String?
    }

    let requests = Mailbox<Request>()
    private lazy var link = makeAMQPLink("RabbitMQ (HTTP publisher)",
                                     healthy: { [health] in health.publisherAMQP.store($0, ordering: .relaxed) }) { connection throws(AMQPError) in
        try connection.confirmSelect()
    }

    func run() {
        while !stop.isSet {
            // Never waits for RabbitMQ: requests that come while it is down are answered 503 at once.
            let amqp = link.get(wait: false)
            let batch = requests.take(timeoutMillis: 200)
            guard let amqp else {
                for r in batch { hubs.post(to: r.hub, .published(token: r.token, id: r.id, ok: false, message: "broker unavailable")) }
                continue
            }
            // Keep heartbeats serviced while idle.
            if batch.isEmpty {
                do { _ = try amqp.nextEvent(timeoutMillis: 0) } catch { link.drop(error, "HTTP publishes get 503 until it is back") }
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
                    hubs.post(to: r.hub, .published(token: r.token, id: r.id, ok: ok, message: ok ? "" : "RabbitMQ refused the message"))
                }
                if ok { metrics.httpPublishes.add(batch.count) }
            } catch {
                for r in batch { hubs.post(to: r.hub, .published(token: r.token, id: r.id, ok: false, message: "broker unavailable")) }
                link.drop(error, "HTTP publishes get 503 until it is back")
            }
        }
        link.close { $0.close() }
    }
}
