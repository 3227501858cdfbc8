import HeraldAMQP
import HeraldCore
import HeraldRuntime
import HeraldLoadClients
#if canImport(Glibc)
import Glibc
#endif

public final class BenchRunner {
    let options: BenchOptions
    let channels: [String]
    let fleet: Fleet
    let publisher: LoadPublisher
    var result: BenchResult
    private var lastSnapshotAt = monotonicMicros()
    var started = monotonicMicros()
    private var deliveriesSeen: UInt64 = 0
    private var lastDeliveries: UInt64 = 0
    private let serverMetrics: ServerMetrics?

    public init(options: BenchOptions) {
        self.options = options
        let run = String(UInt64(wallMicros()) % 1_000_000_000, radix: 36)
        channels = (0..<max(1, options.channels)).map { options.sameChannels ? "\(options.channelPrefix)-\($0)" : "\(options.channelPrefix)-\(run)-\($0)" }
        let urls: [(String) -> String] = options.urls.map { base in
            switch options.kind {
            case .herald:
                let presence = options.presence ? "&presence=true" : ""
                // A stream: the same node's /sse, http:// (the client pool reads its events).
                let root = options.eventStream ? "http://" + (base.hasSuffix("/ws") ? base.dropFirst(5).dropLast(3) + "/sse" : base.dropFirst(5)) : base
                return { channel in root + (root.contains("?") ? "&" : "?") + "channel=\(channel)" + presence }
            case .peer:
                return { channel in base.replacingOccurrences(of: "{channel}", with: channel) }
            }
        }
        fleet = Fleet(kind: options.kind, urls: urls, channels: channels, clientCount: options.clients,
                      engine: options.engine, readRoundMicros: options.readRoundMicros, offerDeflate: options.permessageDeflate)
        publisher = LoadPublisher(route: options.route, channels: channels, size: options.size, template: options.bodyTemplate,
                                  connections: options.publishConnections, persistent: options.scenario == .manyChannels)
        result = BenchResult(options: options)
        serverMetrics = options.scenario == .sequencer ? nil : options.metricsURL.flatMap(ServerMetrics.init(url:))
    }

    /// Runs `body` and returns what the server wrote meanwhile (nil without --metrics-url).
    private func measuringServer(_ body: () throws -> Void) throws -> ServerMetrics.Interval? {
        guard let serverMetrics else { try body(); return nil }
        let a = try serverMetrics.read(), t0 = monotonicMicros(), cpu0 = ProcStats.read(pid: options.serverPID)
        try body()
        var interval = ServerMetrics.interval(a, try serverMetrics.read(), seconds: Double(monotonicMicros() - t0) / 1e6)
        if options.serverPID != nil, let cpu0, let cpu1 = ProcStats.read(pid: options.serverPID) {
            interval.cpuSeconds = cpu1.cpuSeconds - cpu0.cpuSeconds
        }
        return interval
    }

    public func run() throws -> BenchResult {
        try publisher.connect()
        try fleet.start()
        // The client thread is not wound down: `herald bench` exits right after reporting, and
        // the kernel drops every connection at once (closing 10,000 one by one through lws
        // took longer than the whole measurement).
        _ = OSThread(name: "bench-clients") { [fleet] in fleet.run() }
        defer { publisher.close() }
        let serverBefore = ProcStats.read(pid: options.serverPID)
        let benchBefore = ProcStats.read(pid: nil)
        result.serverRSSBeforeKB = serverBefore?.rssKB
        started = monotonicMicros()

        switch options.scenario {
        case .latency:
            try connectAll()
            if options.presence { awaitMemberLists() }
            try publishMeasured(rate: options.rate, seconds: options.duration)
        case .throughput, .manyChannels:
            try connectAll()
            try risingRate()
        case .connections:
            try connectAll()
            sleepMillis(2_000)
            result.serverRSSAfterKB = ProcStats.read(pid: options.serverPID)?.rssKB
        case .storm:
            try storm()
        case .sequencer:
            try sequencerAlone()
        }

        let snap = snapshot()
        result.connected = snap.subscribed
        result.connectFailures = snap.connectFailures
        result.closes = snap.closes
        result.connectTimes = snap.connectTimes
        result.firstMessageTimes = snap.firstMessageTimes
        result.published = publisher.published.reduce(0, +)
        result.publishFailures = publisher.failures
        if options.scenario != .sequencer {
            result.tally = ask { .tally(expected: self.publisher.published, $0) }
        }
        if options.presence {
            let listsComplete = result.presence?.allCompleteMicros
            result.presence = ask { .presence($0) }
            result.presence?.allCompleteMicros = listsComplete
        }
        let elapsed = Double(monotonicMicros() - started) / 1e6
        if let a = serverBefore, let b = ProcStats.read(pid: options.serverPID) {
            result.serverCPUPercent = (b.cpuSeconds - a.cpuSeconds) / elapsed * 100
            if result.serverRSSAfterKB == nil { result.serverRSSAfterKB = b.rssKB }
        }
        if let a = benchBefore, let b = ProcStats.read(pid: nil) {
            result.benchCPUPercent = (b.cpuSeconds - a.cpuSeconds) / elapsed * 100
        }
        return result
    }

    // MARK: Phases

    private func connectAll() throws {
        let t0 = monotonicMicros()
        if let ramp = options.ramp, ramp > 0 {
            var next = 0
            while next < options.clients {
                let due = min(options.clients, Int(Double(monotonicMicros() - t0) / 1e6 * Double(ramp)) + 1)
                if due > next { fleet.post(.connect(next..<due)); next = due }
                sleepMillis(5)
            }
        } else {
            fleet.post(.connect(0..<options.clients))
        }
        let timeout = 30.0 + Double(options.clients) / Double(max(options.ramp ?? 2_000, 1))
        var snap = snapshot()
        while snap.subscribed + snap.connectFailures < options.clients {
            if Double(monotonicMicros() - t0) / 1e6 > timeout { break }
            publisher.keepAlive()
            sleepMillis(20)
            snap = snapshot()
        }
        result.connectSeconds = Double(monotonicMicros() - t0) / 1e6
        progress("connected \(snap.subscribed)/\(options.clients) in \(fmt(result.connectSeconds, 2)) s, \(snap.connectFailures) failed")
    }

    /// Waits (up to 30 s) until every client's member list holds every client of its channel.
    private func awaitMemberLists() {
        let deadline = monotonicMicros() + 30_000_000
        var tally: PresenceTally = ask { .presence($0) }
        while tally.allCompleteMicros == nil && monotonicMicros() < deadline {
            publisher.keepAlive()
            sleepMillis(20)
            tally = ask { .presence($0) }
        }
        result.presence = tally
        progress("member lists: \(tally.complete)/\(options.clients) complete" + (tally.allCompleteMicros.map { " \(fmt(Double($0) / 1e6, 2)) s after the first connect" } ?? "")
                 + ", presence frames per client mean \(fmt(tally.meanFramesPerClient, 1)), max \(tally.maxFramesPerClient)")
    }

    /// Publishes at `rate` for `seconds`, then waits for the clients to drain.
    private func publishMeasured(rate: Double, seconds: Double) throws {
        fleet.publishStartedMicros = wallMicros()
        let t0 = monotonicMicros()
        let before = deliveriesSeen
        let bytesBefore = snapshot().receivedBytes
        result.server = try measuringServer {
            try publisher.run(rate: rate, seconds: seconds, tick: { self.tick() })
            waitCaughtUp(timeoutSeconds: 10)
        }
        tick(force: true)
        let after = snapshot()
        result.wireBytes += after.receivedBytes - bytesBefore
        result.compressedConnections = after.compressedConnections
        result.deliveries += deliveriesSeen - before
        result.deliverySeconds += Double(monotonicMicros() - t0) / 1e6
    }

    /// A step is clean only if the publisher kept its schedule within this.
    static let onScheduleMillis = 100.0

    private func risingRate() throws {
        var rate = options.rate
        var lostBefore: UInt64 = 0
        fleet.publishStartedMicros = wallMicros()
        while rate <= options.maxRate {
            let t0 = monotonicMicros()
            let before = deliveriesSeen
            let start = snapshot()
            let closesBefore = start.closes
            var stepLatency = Histogram()
            publisher.resetLag()
            let watched = [("server", options.serverPID)] + options.watchPIDs.map { ($0.name, Optional($0.pid)) }
            let cpuBefore = watched.map { ProcStats.read(pid: $0.1) }
            let server = try measuringServer {
                try publisher.run(rate: rate, seconds: options.stepSeconds, tick: {
                    if let taken = self.tick() { stepLatency.merge(taken.window) }
                })
                waitCaughtUp(timeoutSeconds: 5)
            }
            if let taken = tick(force: true) { stepLatency.merge(taken.window) }
            let seconds = Double(monotonicMicros() - t0) / 1e6
            let delivered = deliveriesSeen - before
            let tally: FleetTally = ask { .tally(expected: self.publisher.published, $0) }
            let lost = tally.lost - lostBefore
            lostBefore = tally.lost
            let p99 = Double(stepLatency.value(atPercentile: 99)) / 1000
            let end = snapshot()
            let closed = end.closes - closesBefore
            let lag = publisher.maxLagMillis
            let clean = lost == 0 && closed == 0 && p99 <= options.p99BoundMillis && lag <= Self.onScheduleMillis
            var step = StepResult(rate: rate, deliveriesPerSecond: Double(delivered) / seconds, p99Millis: p99, lost: lost, clean: clean,
                                  server: server, publisherLagMillis: lag)
            if delivered > 0, end.receivedBytes > start.receivedBytes {
                step.wireBytesPerDelivery = Double(end.receivedBytes - start.receivedBytes) / Double(delivered)
            }
            result.wireBytes += end.receivedBytes - start.receivedBytes
            result.compressedConnections = end.compressedConnections
            for ((name, pid), before) in zip(watched, cpuBefore) where pid != nil {
                if let before, let after = ProcStats.read(pid: pid) {
                    step.cpuPercent.append((name, (after.cpuSeconds - before.cpuSeconds) / seconds * 100))
                }
            }
            result.steps.append(step)
            result.deliveries += delivered
            result.deliverySeconds += seconds
            progress("step \(fmt(rate, 0)) msg/s: \(fmt(step.deliveriesPerSecond, 0)) deliveries/s, p99 \(fmt(p99, 1)) ms, lost \(lost)\(closed > 0 ? ", \(closed) closed" : "")"
                     + "\(lag > Self.onScheduleMillis ? ", publisher \(fmt(lag, 0)) ms behind" : "")\(step.cpuSummary)\(server.map { ", " + $0.summary } ?? "") → \(clean ? "clean" : "NOT clean")")
            if !clean { break }
            rate *= 1.5
        }
    }

    private func storm() throws {
        // 1. History: each channel gets `history` messages before anyone connects. Replayed
        // history and catch-up are timed as a whole, not as per-message latency.
        fleet.post(.measureLatency(false))
        try publisher.publish(perChannel: options.history, rate: max(options.rate, 2_000))
        let expectedHistory = publisher.published
        sleepMillis(1_000)
        // 2. Everyone connects at once and catches up with the history.
        var t0 = monotonicMicros()
        fleet.post(.connect(0..<options.clients))
        result.caughtUp = waitCaughtUp(timeoutSeconds: 60, expected: expectedHistory)
        result.joinCatchUpSeconds = Double(monotonicMicros() - t0) / 1e6
        result.connectSeconds = result.joinCatchUpSeconds ?? 0
        progress("joined and caught up with \(options.history) messages: \(result.caughtUp)/\(options.clients) in \(fmt(result.joinCatchUpSeconds ?? 0, 3)) s")
        // 3. Live traffic, then every client drops while messages keep coming, then all resume.
        fleet.post(.measureLatency(true))
        try publishMeasured(rate: options.rate, seconds: min(options.duration, 3))
        fleet.post(.measureLatency(false))
        fleet.post(.dropAll)
        var snap = snapshot()
        let dropDeadline = monotonicMicros() + 10_000_000
        while snap.open > 0 && monotonicMicros() < dropDeadline { sleepMillis(20); snap = snapshot() }
        let away = publisher.published
        try publisher.publish(perChannel: Int(away.min() ?? 0) + options.history / 2, rate: options.rate)
        sleepMillis(500)
        t0 = monotonicMicros()
        fleet.post(.resumeAll)
        result.caughtUp = waitCaughtUp(timeoutSeconds: 60)
        result.reconnectCatchUpSeconds = Double(monotonicMicros() - t0) / 1e6
        progress("dropped and resumed: \(result.caughtUp)/\(options.clients) caught up in \(fmt(result.reconnectCatchUpSeconds ?? 0, 3)) s")
    }

    // MARK: Plumbing

    /// Once a second (or when forced): a progress line and a timeline point. Returns the
    /// snapshot it took (its latency window is already in the run's total), or nil.
    @discardableResult
    private func tick(force: Bool = false) -> FleetSnapshot? {
        let now = monotonicMicros()
        if !force && now - lastSnapshotAt < 1_000_000 { return nil }
        let snap = snapshot()
        let seconds = Double(now - lastSnapshotAt) / 1e6
        lastSnapshotAt = now
        deliveriesSeen = snap.deliveries
        let rate = Double(deliveriesSeen - lastDeliveries) / max(seconds, 0.001)
        lastDeliveries = deliveriesSeen
        let p99 = Double(snap.window.value(atPercentile: 99)) / 1000
        let p50 = Double(snap.window.value(atPercentile: 50)) / 1000
        result.timeline.append(TimelinePoint(second: Double(now - started) / 1e6, deliveriesPerSecond: rate, p99Millis: p99))
        progress("[\(fmt(Double(now - started) / 1e6, 0))s] clients \(snap.subscribed)/\(options.clients)  published \(publisher.published.reduce(0, +))  deliveries \(fmt(rate, 0))/s  p50 \(fmt(p50, 1)) ms  p99 \(fmt(p99, 1)) ms")
        return snap
    }

    @discardableResult
    private func waitCaughtUp(timeoutSeconds: Double, expected: [UInt64]? = nil) -> Int {
        let want = expected ?? publisher.published
        let t0 = monotonicMicros()
        var done = 0
        while Double(monotonicMicros() - t0) / 1e6 < timeoutSeconds {
            done = ask { .caughtUp(expected: want, $0) }
            if done >= options.clients { break }
            publisher.keepAlive()
            sleepMillis(10)
        }
        return done
    }

    /// The fleet's counters; each latency window it hands over is added to the run's total
    /// here and only here, so no sample is counted twice or dropped.
    private func snapshot() -> FleetSnapshot {
        let snap: FleetSnapshot = ask { .snapshot($0) }
        deliveriesSeen = snap.deliveries
        result.latency.merge(snap.window)
        return snap
    }

    private func ask<T: Sendable>(_ make: (Mailbox<T>) -> Fleet.Command) -> T {
        let reply = Mailbox<T>()
        fleet.post(make(reply))
        while true {
            if let value = reply.take(timeoutMillis: 1_000).first { return value }
        }
    }

    func progress(_ line: String) {
        if !options.quiet { printError(line) }
    }
}
