import HeraldAMQP
import HeraldCore
import HeraldRuntime
import Logging

/// Clients talking back through RabbitMQ: a connection's publish becomes an AMQP publish (to
/// the channel through the main exchange, or to `<exchange>.inbound` for the application's
/// worker), answered once RabbitMQ confirms it; a connection's call becomes an AMQP request to
/// `<exchange>.rpc` (routing key = method) with direct reply-to (`amq.rabbitmq.reply-to`), a
/// correlation id and an expiration, answered by whichever worker consumes it.
///
/// Every publish is `mandatory`: a call no worker's queue is bound to comes back at once
/// (`no_route`), as does a backend publish nothing is bound for (`unavailable`). While RabbitMQ
/// is unreachable or has blocked the connection (`connection.blocked`), each request is refused
/// at once with `unavailable`, and what was waiting is answered `unavailable` when the
/// connection is lost: nothing waits without bound.
///
/// - Important: owns its AMQP connection; runs on `herald-talkback`, the only thread that touches
///   its state (hence `@unchecked Sendable`).
final class TalkBackWorker: Worker, @unchecked Sendable {
    private struct Job: Sendable {
        let hub: Int
        let connection: UInt64
        let request: TalkBackRequest
    }

    /// A publish waiting for its confirm.
    private struct Publish {
        let hub: Int
        let connection: UInt64
        let request: ClientPublishRequest
        let correlation: String
        var returned = false
    }

    /// A call waiting for its reply.
    private struct Call {
        let hub: Int
        let connection: UInt64
        let id: String
        let startedMillis: UInt64
    }

    private let inbox = Mailbox<Job>()
    private let wake = AMQPWake()
    private var publishes: [UInt64: Publish] = [:]
    /// The delivery tag of each waiting publish by its correlation id (a return names the id).
    private var publishTags: [String: UInt64] = [:]
    private var calls: [String: Call] = [:]
    /// Calls by delivery tag until RabbitMQ confirms them (a refused one is answered `unavailable`).
    private var callTags: [UInt64: String] = [:]
    /// Call timeouts and publish confirm timeouts, by correlation id.
    private var deadlines = DeadlineHeap<String>()
    private var nextCorrelation: UInt64 = 0
    /// Why RabbitMQ blocked the connection, while it does.
    private var blocked: String?

    /// Publishes of the whole node waiting for their confirm; past it, `unavailable`.
    static let maxWaitingPublishes = 10_000
    /// The longest a publish waits for its confirm before it is answered `unavailable`.
    static let confirmTimeoutMillis: UInt64 = 10_000
    static let replyQueue = "amq.rabbitmq.reply-to"

    private lazy var link = makeAMQPLink("RabbitMQ (client publish and RPC)", healthy: { _ in }) { [unowned self] c throws(AMQPError) in
        try c.declareExchange(config.inboundExchange, type: "topic", durable: true)
        try c.declareExchange(config.rpcExchange, type: "topic", durable: true)
        try c.consume(queue: Self.replyQueue, noAck: true)
        try c.confirmSelect()
        blocked = nil
    }

    /// The answer when the node runs no talk-back worker (nothing enables it).
    static func disabled(_ request: TalkBackRequest) -> TalkBackAnswer {
        let message = "client publish and RPC are not enabled on this server"
        switch request {
        case let .publish(p): return .publishFailed(id: p.id, channel: p.channel, code: .unavailable, message: message)
        case let .rpc(r): return .rpcError(id: r.id, code: .unavailable, message: message)
        }
    }

    /// A connection's publish or call. Any thread (the WebSocket threads).
    func take(hub: Int, connection: UInt64, request: TalkBackRequest) {
        inbox.post(Job(hub: hub, connection: connection, request: request))
        wake.signal()
    }

    func run() {
        while !stop.isSet {
            guard let amqp = link.get(wait: false) else {
                for job in inbox.take(timeoutMillis: 100) { refuse(job, "RabbitMQ is unavailable; try again") }
                continue
            }
            do throws(AMQPError) {
                let jobs = inbox.drain()
                for (i, job) in jobs.enumerated() {
                    do throws(AMQPError) {
                        try send(job, amqp)
                    } catch {
                        // This one and the rest of the batch never reached RabbitMQ: answered, not lost.
                        for unsent in jobs[i...] { refuse(unsent, "RabbitMQ connection lost; try again") }
                        throw error
                    }
                }
                let now = monotonicMillis()
                let wait = deadlines.next.map { $0 > now ? Int(min($0 - now, 1_000)) : 0 } ?? 1_000
                try handle(amqp.nextEvent(timeoutMillis: wait, wake: wake))
                while amqp.hasBufferedData { try handle(amqp.nextEvent(timeoutMillis: 0)) }
                expire(now: monotonicMillis())
            } catch {
                link.drop(error, "client publishes and RPCs get unavailable until it is back")
                failEverything("RabbitMQ connection lost; try again")
            }
        }
        failEverything("the server is shutting down")
        link.close { $0.close() }
    }

    // MARK: Out

    private func send(_ job: Job, _ amqp: AMQPConnection) throws(AMQPError) {
        if let blocked { return refuse(job, "RabbitMQ has blocked publishing (\(blocked)); try again later") }
        nextCorrelation += 1
        switch job.request {
        case let .publish(p):
            guard publishes.count < Self.maxWaitingPublishes else {
                return refuse(job, "\(Self.maxWaitingPublishes) publishes of this node are waiting for RabbitMQ; try again")
            }
            let correlation = "p\(nextCorrelation)"
            var headers = [("herald-client", p.sender.client), ("herald-node", config.nodeID)]
            if let user = p.sender.user { headers.insert(("herald-user", user), at: 0) }
            let tag = try amqp.publish(exchange: p.backend ? config.inboundExchange : config.exchange, routingKey: p.channel, body: p.data,
                                       properties: AMQPProperties(contentType: "application/json", messageID: p.messageID, persistent: true,
                                                                  headers: headers, correlationID: correlation),
                                       mandatory: true)
            publishes[tag] = Publish(hub: job.hub, connection: job.connection, request: p, correlation: correlation)
            publishTags[correlation] = tag
            deadlines.set(correlation, deadline: monotonicMillis() + Self.confirmTimeoutMillis)
        case let .rpc(r):
            let correlation = "\(config.instance)-\(nextCorrelation)"
            var headers = [("herald-claims", String(decoding: r.claims, as: UTF8.self)), ("herald-client", r.sender.client),
                           ("herald-node", config.nodeID)]
            if let user = r.sender.user { headers.insert(("herald-user", user), at: 0) }
            let tag = try amqp.publish(exchange: config.rpcExchange, routingKey: r.method, body: r.data,
                                       properties: AMQPProperties(contentType: "application/json", headers: headers, replyTo: Self.replyQueue,
                                                                  correlationID: correlation, expiration: String(r.timeoutMillis)),
                                       mandatory: true)
            let now = monotonicMillis()
            calls[correlation] = Call(hub: job.hub, connection: job.connection, id: r.id, startedMillis: now)
            callTags[tag] = correlation
            deadlines.set(correlation, deadline: now + r.timeoutMillis)
            metrics.talkBack.callsInFlight.add()
        }
    }

    // MARK: In

    private func handle(_ event: AMQPEvent) {
        switch event {
        case let .confirm(tag, multiple, ok):
            confirmed(multiple ? publishes.keys.filter { $0 <= tag } : [tag], ok: ok)
            confirmedCalls(multiple ? callTags.keys.filter { $0 <= tag } : [tag], ok: ok)
        case let .returned(r):
            guard let correlation = r.properties.correlationID else { return }
            if let tag = publishTags[correlation] {
                publishes[tag]?.returned = true
            } else if let call = calls[correlation] {
                answer(call, correlation, .rpcError(id: call.id, code: .noRoute, message: "no worker serves \(r.routingKey): nothing is bound to it on \(config.rpcExchange)"))
            }
        case let .delivery(d):
            guard let correlation = d.properties.correlationID, let call = calls[correlation] else {
                metrics.talkBack.lateReplies.add()
                return
            }
            metrics.talkBack.observe(millis: Int(monotonicMillis() - call.startedMillis))
            if let problem = d.properties.header("herald-error") {
                answer(call, correlation, .rpcError(id: call.id, code: .workerError, message: String(problem.prefix(1_024))))
            } else if let data = try? JSON.minify(d.body), !d.body.isEmpty {
                answer(call, correlation, .rpcResult(id: call.id, data: data))
            } else {
                answer(call, correlation, .rpcError(id: call.id, code: .workerError, message: "the worker's reply is not JSON"))
            }
        case let .blocked(reason):
            blocked = reason.isEmpty ? "resource alarm" : reason
            logger.warning("RabbitMQ blocked client publishes and RPCs", metadata: ["reason": "\(reason)"])
        case .unblocked:
            blocked = nil
            logger.info("RabbitMQ unblocked client publishes and RPCs")
        case .timeout:
            break
        }
    }

    private func confirmed(_ tags: [UInt64], ok: Bool) {
        for tag in tags.sorted() {
            guard let p = publishes.removeValue(forKey: tag) else { continue }
            publishTags[p.correlation] = nil
            deadlines.remove(p.correlation)
            let r = p.request
            let answer: TalkBackAnswer
            if !ok {
                answer = .publishFailed(id: r.id, channel: r.channel, code: .unavailable, message: "RabbitMQ refused the message; send it again with the same id")
            } else if p.returned {
                answer = .publishFailed(id: r.id, channel: r.channel, code: .unavailable,
                                        message: r.backend ? "no worker's queue is bound to \(config.inboundExchange) for this channel" : "nothing is bound to \(config.exchange)")
            } else {
                answer = .published(id: r.id, channel: r.channel, messageID: r.messageID)
            }
            reply(p.hub, p.connection, answer)
        }
    }

    private func confirmedCalls(_ tags: [UInt64], ok: Bool) {
        for tag in tags {
            guard let correlation = callTags.removeValue(forKey: tag) else { continue }
            if !ok, let call = calls[correlation] {
                answer(call, correlation, .rpcError(id: call.id, code: .unavailable, message: "RabbitMQ refused the call; try again"))
            }
        }
    }

    private func expire(now: UInt64) {
        for correlation in deadlines.expire(now: now) {
            if let call = calls[correlation] {
                answer(call, correlation, .rpcError(id: call.id, code: .timeout, message: "no answer within the call's timeout"))
            } else if let tag = publishTags.removeValue(forKey: correlation), let p = publishes.removeValue(forKey: tag) {
                reply(p.hub, p.connection, .publishFailed(id: p.request.id, channel: p.request.channel, code: .unavailable,
                                                          message: "RabbitMQ did not confirm it in time; send it again with the same id"))
            }
        }
    }

    // MARK: Answers

    private func answer(_ call: Call, _ correlation: String, _ answer: TalkBackAnswer) {
        calls[correlation] = nil
        deadlines.remove(correlation)
        metrics.talkBack.callsInFlight.add(-1)
        reply(call.hub, call.connection, answer)
    }

    /// Refused before it reached RabbitMQ.
    private func refuse(_ job: Job, _ message: String) {
        switch job.request {
        case let .publish(p): reply(job.hub, job.connection, .publishFailed(id: p.id, channel: p.channel, code: .unavailable, message: message))
        case let .rpc(r): reply(job.hub, job.connection, .rpcError(id: r.id, code: .unavailable, message: message))
        }
    }

    /// Everything waiting is answered `unavailable` (the connection it went out on is gone).
    private func failEverything(_ message: String) {
        for (_, p) in publishes {
            reply(p.hub, p.connection, .publishFailed(id: p.request.id, channel: p.request.channel, code: .unavailable, message: message))
        }
        for (correlation, call) in calls {
            answer(call, correlation, .rpcError(id: call.id, code: .unavailable, message: message))
        }
        publishes = [:]
        publishTags = [:]
        calls = [:]
        callTags = [:]
        deadlines = DeadlineHeap()
    }

    private func reply(_ hub: Int, _ connection: UInt64, _ answer: TalkBackAnswer) {
        switch answer {
        case .published: metrics.talkBack.publishes["published"]?.add()
        case let .publishFailed(_, _, code, _): metrics.talkBack.publishes[code.rawValue]?.add()
        case .rpcResult: metrics.talkBack.calls["result"]?.add()
        case let .rpcError(_, code, _): metrics.talkBack.calls[code.rawValue]?.add()
        }
        hubs.post(to: hub, .talkBack(connection: connection, answer))
    }
}
