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
    /// The next number per channel (1-based, continues across calls).
    public private(set) var next: [UInt64]
    public private(set) var failures = 0
    private var amqp: AMQPConnection?
    private var http: HTTPClient?

    public init(route: Route, channels: [String], size: Int) {
        self.route = route
        self.channels = channels
        self.size = size
        self.next = Array(repeating: 1, count: channels.count)
    }

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
            guard let client = HTTPClient(url: url) else { throw BenchError("--publish-url must be http://host:port/…{channel}") }
            http = client
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
            while sent < due {
                try publishOne(channel)
                channel = (channel + 1) % channels.count
                sent += 1
                unconfirmed += 1
                if unconfirmed >= 200 { try confirm(); unconfirmed = 0 }
            }
            if now - lastTick >= 100_000 {
                if unconfirmed > 0 { try confirm(); unconfirmed = 0 }
                tick()
                lastTick = now
            }
            usleep(500)
        }
        try confirm()
    }

    private func publishOne(_ channel: Int) throws {
        let body = Payload.make(sentMicros: wallMicros(), n: next[channel], size: size)
        switch route {
        case let .amqp(_, exchange):
            _ = try amqp!.publish(exchange: exchange, routingKey: channels[channel], body: body,
                              properties: AMQPProperties(contentType: "application/json",
                                                         messageID: "bench-\(channels[channel])-\(next[channel])",
                                                         persistent: false))
        case let .http(url, apiKey):
            // http://host:port/path → /path, with the channel filled in.
            let path = String(url.dropFirst("http://".count).drop { $0 != "/" })
                .replacingOccurrences(of: "{channel}", with: channels[channel])
            var headers = [("Content-Type", "application/json"),
                           ("Idempotency-Key", "bench-\(channels[channel])-\(next[channel])")]
            if let apiKey { headers.append(("X-API-Key", apiKey)) }
            let response = try http!.post(path: path, body: body, headers: headers)
            if response.status >= 300 { failures += 1 }
        }
        next[channel] += 1
    }

    private func confirm() throws {
        guard let amqp else { return }
        let refused = try amqp.waitForConfirms(timeoutMillis: 10_000)
        failures += refused.count
    }

    public func close() {
        amqp?.close()
        http?.disconnect()
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
