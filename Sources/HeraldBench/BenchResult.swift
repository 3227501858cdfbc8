public struct StepResult: Sendable {
    public var rate: Double
    public var deliveriesPerSecond: Double
    public var p99Millis: Double
    public var lost: UInt64
    public var clean: Bool
    /// From the server's /metrics (Herald with --metrics-url).
    var server: ServerMetrics.Interval?
    /// How far the publisher fell behind its schedule during the step (on schedule: ≤ 100 ms).
    public var publisherLagMillis = 0.0
    /// CPU of the server (`server`) and of every watched process during the step, % of one core.
    public var cpuPercent: [(name: String, percent: Double)] = []
    /// Bytes the clients read over the wire per message delivered during the step.
    public var wireBytesPerDelivery: Double?

    /// CPU µs per published message of each measured process.
    public var cpuMicrosPerMessage: [(name: String, micros: Double)] {
        cpuPercent.map { ($0.name, $0.percent / 100 * 1e6 / max(rate, 1)) }
    }
}

public struct TimelinePoint: Sendable {
    public var second: Double
    public var deliveriesPerSecond: Double
    public var p99Millis: Double
}

public struct BenchResult: Sendable {
    public var options: BenchOptions
    public var connected = 0
    public var connectFailures = 0
    public var closes = 0
    public var connectSeconds = 0.0
    public var connectTimes = Histogram()
    public var firstMessageTimes = Histogram()
    public var published: UInt64 = 0
    public var publishFailures = 0
    public var deliveries: UInt64 = 0
    public var deliverySeconds = 0.0
    /// What the clients read over the wire while deliveries were measured, and how many of
    /// them had permessage-deflate negotiated.
    public var wireBytes: UInt64 = 0
    public var compressedConnections = 0
    public var wireBytesPerDelivery: Double? { deliveries > 0 && wireBytes > 0 ? Double(wireBytes) / Double(deliveries) : nil }
    public var latency = Histogram()
    public var tally = FleetTally()
    public var timeline: [TimelinePoint] = []
    public var steps: [StepResult] = []
    public var serverCPUPercent: Double?
    /// The server's writes over the measured publishing (Herald with --metrics-url).
    var server: ServerMetrics.Interval?
    public var benchCPUPercent: Double?
    public var serverRSSBeforeKB: Int?
    public var serverRSSAfterKB: Int?
    public var joinCatchUpSeconds: Double?
    public var reconnectCatchUpSeconds: Double?
    public var caughtUp = 0
    /// With `presence`: the member lists' frames, and when they were all complete.
    public var presence: PresenceTally?
    public var sequencedPerSecond: Double?
    public var sequencerSeconds: Double?
    /// Every drain's rate, in the order measured; `sequencedPerSecond` is their median.
    public var sequencerDrains: [Double] = []
    /// sequencer preset: the same number of messages drained from a plain queue by a consumer
    /// that only acks (no Redis, no live publish): RabbitMQ's own ceiling on this machine.
    public var brokerAlonePerSecond: Double?

    public var deliveriesPerSecond: Double { deliverySeconds > 0 ? Double(deliveries) / deliverySeconds : 0 }
    /// The clean step that delivered the most. Not simply the last clean one: a publisher that
    /// cannot reach a step's rate (an HTTP publisher, one request at a time) keeps later steps
    /// clean while they deliver less.
    public var bestCleanStep: StepResult? { steps.filter(\.clean).max { $0.deliveriesPerSecond < $1.deliveriesPerSecond } }
    public var memoryPerConnectionKB: Double? {
        guard options.scenario == .connections, let a = serverRSSBeforeKB, let b = serverRSSAfterKB, connected > 0 else { return nil }
        return Double(b - a) / Double(connected)
    }
}

/// Runs one scenario end to end: clients on their own thread, the publisher on this one.

extension StepResult {
    /// ", CPU server 52% (52 µs/msg), rabbitmq 80% (80 µs/msg)", or "" when nothing was measured.
    var cpuSummary: String {
        guard !cpuPercent.isEmpty else { return "" }
        return ", CPU " + zip(cpuPercent, cpuMicrosPerMessage).map { "\($0.0.name) \(fmt($0.0.percent, 0))% (\(fmt($0.1.micros, 1)) µs/msg)" }
            .joined(separator: ", ")
    }
}
