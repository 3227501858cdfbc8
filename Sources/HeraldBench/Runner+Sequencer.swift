import HeraldAMQP
import HeraldCore
import HeraldRuntime
import HeraldLoadClients
#if canImport(Glibc)
import Glibc
#endif

/// The sequencer preset: how fast one node stores what RabbitMQ hands it, with no clients, and
/// RabbitMQ's own ceiling for the same pattern.
extension BenchRunner {
    /// RabbitMQ → Redis with no clients: the server is paused (SIGSTOP) while `count` messages
    /// queue up, then resumed; its own counter of stored messages times the drain.
    func sequencerAlone() throws {
        guard let pid = options.serverPID, let metricsURL = options.metricsURL, let http = HTTPClient(url: metricsURL) else {
            throw BenchError("the sequencer preset needs --server-pid and --metrics-url http://host:port/metrics")
        }
        let path = String(metricsURL.dropFirst("http://".count).drop { $0 != "/" })
        func stored() throws -> Double {
            let body = String(decoding: try http.get(path: path).body, as: UTF8.self)
            for line in body.split(separator: "\n") where line.hasPrefix("herald_messages_in_total ") {
                return Double(line.split(separator: " ")[1]) ?? 0
            }
            throw BenchError("no herald_messages_in_total at \(metricsURL)")
        }
        var seconds: [Double] = []
        var count = 0.0
        for drain in 1...max(1, options.drains) {
            let before = try stored()
            let queuedBefore = Double(publisher.published.reduce(0, +))
            guard kill(pid, SIGSTOP) == 0 else { throw BenchError("cannot stop pid \(pid)") }
            let t0 = monotonicMicros()
            do {
                try publisher.publish(perChannel: drain * (options.count / channels.count), rate: 1e9) // a running total
            } catch {
                kill(pid, SIGCONT)
                throw error
            }
            count = Double(publisher.published.reduce(0, +)) - queuedBefore
            progress("queued \(Int(count)) messages in \(fmt(Double(monotonicMicros() - t0) / 1e6, 2)) s with the server paused")
            kill(pid, SIGCONT)
            let resumed = monotonicMicros()
            let target = before + count
            var now = try stored()
            var last = now
            var polls = 0
            // Polled every 10 ms so the end of the drain is seen within 10 ms (a 100 ms poll made a
            // 2 s drain read up to 5% slow); a timeline point every 100 ms.
            while now < target && Double(monotonicMicros() - resumed) / 1e6 < 120 {
                sleepMillis(10)
                now = try stored()
                polls += 1
                if polls % 10 == 0 || now >= target {
                    let t = Double(monotonicMicros() - started) / 1e6
                    result.timeline.append(TimelinePoint(second: t, deliveriesPerSecond: (now - last) * 10, p99Millis: 0))
                    last = now
                    publisher.keepAlive()
                }
            }
            let s = Double(monotonicMicros() - resumed) / 1e6
            seconds.append(s)
            result.sequencerDrains.append((now - before) / s)
            progress("sequenced \(Int(now - before)) in \(fmt(s, 2)) s = \(fmt((now - before) / s, 0))/s")
        }
        // The median drain (the lower middle one for an even count), with its own duration.
        let order = result.sequencerDrains.indices.sorted { result.sequencerDrains[$0] < result.sequencerDrains[$1] }
        let middle = order[(order.count - 1) / 2]
        result.sequencedPerSecond = result.sequencerDrains[middle]
        result.sequencerSeconds = seconds[middle]
        if case let .amqp(url, _) = options.route {
            result.brokerAlonePerSecond = try brokerAlone(url: url, count: Int(count))
        }
    }

    /// RabbitMQ's ceiling for the sequencer's pattern: `count` messages of the same size queued
    /// in a fresh queue, then drained by a consumer with the sequencer's prefetch that acks every
    /// 1,000 (multiple) and does nothing else. Returns messages per second.
    private func brokerAlone(url: String, count: Int) throws -> Double {
        let amqp = AMQPConnection(endpoint: try AMQPEndpoint(url: url))
        try amqp.connect()
        defer { amqp.close() }
        let queue = "herald-bench-broker-alone-\(getpid())-\(monotonicMicros())"
        try amqp.declareQueue(queue, durable: false, exclusive: true, autoDelete: true)
        try amqp.confirmSelect()
        for n in 0..<count {
            let body = Payload.make(sentMicros: wallMicros(), n: UInt64(n + 1), size: options.size, template: options.bodyTemplate)
            _ = try amqp.publish(exchange: "", routingKey: queue, body: body,
                                 properties: AMQPProperties(contentType: "application/json", messageID: "broker-\(n)", persistent: false))
            if n % 200 == 199 { _ = try amqp.waitForConfirms(timeoutMillis: 10_000) }
        }
        _ = try amqp.waitForConfirms(timeoutMillis: 10_000)
        try amqp.qos(prefetch: HeraldConfig().prefetch)
        let t0 = monotonicMicros()
        try amqp.consume(queue: queue)
        var received = 0
        var lastTag: UInt64 = 0
        while received < count && monotonicMicros() - t0 < 120_000_000 {
            if case let .delivery(d) = try amqp.nextEvent(timeoutMillis: 100) {
                received += 1
                lastTag = d.tag
                if received % 1_000 == 0 || received == count { try amqp.ack(lastTag, multiple: true) }
            }
        }
        let seconds = Double(monotonicMicros() - t0) / 1e6
        progress("broker alone: \(received) drained and acked in \(fmt(seconds, 2)) s")
        return Double(received) / seconds
    }
}
