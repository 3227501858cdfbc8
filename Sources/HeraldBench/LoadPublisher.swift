import HeraldAMQP
import HeraldRuntime
import HeraldLoadClients
#if canImport(Glibc)
import Glibc
#endif

/// Publishes numbered, timestamped bodies at a steady rate, round-robin over the channels,
/// through RabbitMQ (with publisher confirms) or an HTTP publish endpoint.
public final class LoadPublisher {
    public enum Route: Sendable {
        case amqp(url: String, exchange: String)
        /// `{channel}` in the URL is replaced by the channel name.
        case http(url: String, apiKey: String?)
    }

    let route: Route
    let channels: [String]
    let size: Int
    /// HTTP: keep-alive connections, each with requests pipelined; a channel always goes through
    /// the same one, so its messages keep their order.
    let connections: Int
    /// HTTP: requests in flight per connection before the publisher waits for answers.
    static let maxInFlight = 256
    /// The next number per channel (1-based, continues across calls).
    public private(set) var next: [UInt64]
    public private(set) var failures = 0
    private var amqp: AMQPConnection?
    private var http: [HTTPClient] = []
    /// How far the publisher fell behind its schedule (messages due but not yet sent, as time),
    /// at most, since `resetLag`.
    public private(set) var maxLagMillis = 0.0

    /// AMQP: publish with delivery mode 2 (RabbitMQ writes them to disk before confirming).
    let persistent: Bool

    /// The body template (`BenchOptions.bodyTemplate`), or nil: padded bodies of `size`.
    let template: [UInt8]?
    /// In every message id, so that two runs on the same channels (`--same-channels`) are not
    /// taken for retries of one another and de-duplicated.
    private let runID = String(UInt64.random(in: 0..<UInt64.max) % 1_000_000_000, radix: 36)

    public init(route: Route, channels: [String], size: Int, template: [UInt8]? = nil, connections: Int = 8, persistent: Bool = false) {
        self.template = template
        self.persistent = persistent
        self.route = route
        self.channels = channels
        self.size = size
        self.connections = max(1, connections)
        self.next = Array(repeating: 1, count: channels.count)
    }

    public func resetLag() { maxLagMillis = 0 }

    /// Messages published so far, per channel.
    public var published: [UInt64] { next.map { $0 - 1 } }

    public func connect() throws {
        switch route {
        case let .amqp(url, exchange):
            let c = AMQPConnection(endpoint: try AMQPEndpoint(url: url))
            try c.connect()
            try c.declareExchange(exchange, type: "fanout", durable: true)
            try c.confirmSelect()
            amqp = c
        case let .http(url, _):
            http = try (0..<connections).map { _ in
                guard let client = HTTPClient(url: url) else { throw BenchError("--publish-url must be http://host:port/…{channel}") }
                return client
            }
        }
    }

    /// Keeps an idle AMQP connection alive (heartbeats) while the runner waits.
    public func keepAlive() {
        guard let amqp else { return }
        do { _ = try amqp.nextEvent(timeoutMillis: 0) } catch { self.amqp = nil; try? connect() }
    }

    /// Publishes until every channel has `perChannel` messages in all, at most `rate` per second.
    public func publish(perChannel: Int, rate: Double) throws {
        let remaining = published.reduce(0) { $0 + max(0, perChannel - Int($1)) }
        if remaining > 0 { try run(rate: rate, seconds: .infinity, total: remaining) }
    }

    /// Publishes `rate` messages per second for `seconds`; `tick` runs about every 100 ms.
    public func run(rate: Double, seconds: Double, stop: () -> Bool = { false }, total: Int? = nil,
                    tick: () -> Void = {}) throws {
        let start = monotonicMicros()
        let end = seconds.isFinite ? start + UInt64(seconds * 1_000_000) : .max
        var sent: UInt64 = 0
        var channel = 0
        var lastTick = start
        var unconfirmed = 0
        while !stop() {
            let now = monotonicMicros()
            if now >= end { break }
            var due = UInt64(Double(now - start) / 1_000_000 * rate) + 1
            if let total { due = min(due, UInt64(total)) }
            if let total, sent >= UInt64(total) { break }
            if due > sent + 1 { maxLagMillis = max(maxLagMillis, Double(due - sent - 1) / rate * 1000) }
            while sent < due {
                try publishOne(channel)
                channel = (channel + 1) % channels.count
                sent += 1
                unconfirmed += 1
                if unconfirmed >= 200 { try confirm(wait: false); unconfirmed = 0 }
            }
            try collectAnswers(waitMillis: 0)
            if now - lastTick >= 100_000 {
                if unconfirmed > 0 { try confirm(wait: false); unconfirmed = 0 }
                tick()
                lastTick = now
            }
            usleep(500)
        }
        try confirm()
    }

    private func publishOne(_ channel: Int) throws {
        let body = Payload.make(sentMicros: wallMicros(), n: next[channel], size: size, template: template)
        switch route {
        case let .amqp(_, exchange):
            _ = try amqp!.publish(exchange: exchange, routingKey: channels[channel], body: body,
                              properties: AMQPProperties(contentType: "application/json",
                                                         messageID: "bench-\(runID)-\(channels[channel])-\(next[channel])",
                                                         persistent: persistent))
        case let .http(url, apiKey):
            // http://host:port/path → /path, with the channel filled in.
            let path = String(url.dropFirst("http://".count).drop { $0 != "/" })
                .replacingOccurrences(of: "{channel}", with: channels[channel])
            var headers = [("Content-Type", "application/json"),
                           ("Idempotency-Key", "bench-\(runID)-\(channels[channel])-\(next[channel])")]
            if let apiKey { headers.append(("X-API-Key", apiKey)) }
            let client = http[channel % http.count]
            while client.pending >= Self.maxInFlight { collect(client, waitMillis: 10_000) }
            do {
                try client.pipelinePOST(path: path, body: body, headers: headers)
            } catch {
                failures += 1
            }
        }
        next[channel] += 1
    }

    /// AMQP: waits for the publisher confirms; HTTP: with `wait`, for every answer in flight.
    private func confirm(wait: Bool = true) throws {
        if let amqp { failures += try amqp.waitForConfirms(timeoutMillis: 10_000).count }
        if wait {
            for client in http { while client.pending > 0 { collect(client, waitMillis: 10_000) } }
        }
    }

    /// Takes in the HTTP answers that have arrived.
    private func collectAnswers(waitMillis: Int32) throws {
        for client in http where client.pending > 0 { collect(client, waitMillis: waitMillis) }
    }

    /// One connection's answers: any but 2xx counts as a failure, and so does every request a
    /// connection that failed or closed took with it.
    private func collect(_ client: HTTPClient, waitMillis: Int32) {
        let before = client.pending
        do {
            let answers = try client.collect(timeoutMillis: waitMillis)
            failures += answers.count { $0.status >= 300 }
            if client.pending == 0 && answers.count < before { failures += before - answers.count }
            if answers.isEmpty && waitMillis > 0 && client.pending == before {
                failures += before
                client.disconnect()
            }
        } catch {
            failures += before
        }
    }

    public func close() {
        amqp?.close()
        for client in http { client.disconnect() }
    }
}

public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: target) {
            out += rest[rest.startIndex..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

extension Substring {
    func range(of target: String) -> Range<Substring.Index>? {
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(target) { return i..<index(i, offsetBy: target.count) }
            i = index(after: i)
        }
        return nil
    }
}
