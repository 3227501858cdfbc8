import HeraldLoadClients

/// Herald's own `/metrics`, read by the bench around a measurement: how many writes the server
/// made for the deliveries it measured (the cost of fan-out is the number of writes).
struct ServerMetrics {
    let http: HTTPClient
    let path: String
    let url: String

    init?(url: String) {
        guard url.hasPrefix("http://"), let http = HTTPClient(url: url) else { return nil }
        self.http = http
        self.url = url
        path = String(url.dropFirst("http://".count).drop { $0 != "/" })
    }

    /// Every `herald_…` sample, by its name with its labels (`herald_x{thread="0"}`).
    func read() throws -> [String: Double] {
        Self.parse(String(decoding: try http.get(path: path).body, as: UTF8.self))
    }

    static func parse(_ body: String) -> [String: Double] {
        var samples: [String: Double] = [:]
        for line in body.split(separator: "\n") where line.hasPrefix("herald_") {
            guard let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else { continue }
            samples[String(line[..<space])] = v
        }
        return samples
    }

    /// The samples of one per-thread gauge, in thread order.
    static func perThread(_ samples: [String: Double], _ name: String) -> [Double] {
        var values: [Double] = []
        while let v = samples["\(name){thread=\"\(values.count)\"}"] { values.append(v) }
        return values
    }

    /// A stretch between two reads.
    struct Interval: Sendable {
        var writes: Double
        var deliveries: Double
        var seconds: Double
        /// The widest coalescing window of any WebSocket thread at the end of the stretch, ms.
        var windowMillis: Double?
        /// Each WebSocket thread's CPU share at the end of the stretch.
        var threadsBusy: [Double]
        /// The busiest thread's share.
        var busy: Double? { threadsBusy.max() }
        /// The server process's CPU time over the stretch (with --server-pid).
        var cpuSeconds: Double?
        /// What one CPU-second of the whole server process delivers: the cost of fan-out,
        /// whatever the number of threads it is spread over.
        var deliveriesPerCPUSecond: Double? { cpuSeconds.flatMap { $0 > 0 ? deliveries / $0 : nil } }
        var writesPerSecond: Double { seconds > 0 ? writes / seconds : 0 }
        var messagesPerWrite: Double { writes > 0 ? deliveries / writes : 0 }
        var summary: String {
            "server \(fmt(writesPerSecond, 0)) writes/s, \(fmt(messagesPerWrite, 1)) messages/write" +
                (windowMillis.map { ", window \(fmt($0, 0)) ms" } ?? "") + (threadsBusy.isEmpty ? "" : ", " + (threadsBusy.count == 1 ? "thread" : "threads") + " "
                    + threadsBusy.map { "\(fmt($0 * 100, 0))%" }.joined(separator: " + ") + " busy")
                + (deliveriesPerCPUSecond.map { ", \(fmt($0, 0)) deliveries per CPU-second" } ?? "")
        }
        var json: String {
            "{\"writes\":\(Int(writes)),\"deliveries\":\(Int(deliveries)),\"writes_per_sec\":\(fmt(writesPerSecond, 1)),\"messages_per_write\":\(fmt(messagesPerWrite, 2)),\"window_ms\":\(windowMillis.map { fmt($0, 1) } ?? "null"),\"ws_thread_busy\":\(busy.map { fmt($0, 3) } ?? "null"),\"ws_threads_busy\":[\(threadsBusy.map { fmt($0, 3) }.joined(separator: ","))],\"cpu_seconds\":\(cpuSeconds.map { fmt($0, 3) } ?? "null"),\"deliveries_per_cpu_second\":\(deliveriesPerCPUSecond.map { fmt($0, 0) } ?? "null")}"
        }
    }

    static func interval(_ a: [String: Double], _ b: [String: Double], seconds: Double) -> Interval {
        func delta(_ name: String) -> Double { (b[name] ?? 0) - (a[name] ?? 0) }
        return Interval(writes: delta("herald_writes_total"), deliveries: delta("herald_deliveries_total"), seconds: seconds,
                        windowMillis: perThread(b, "herald_ws_coalesce_window_seconds").max().map { $0 * 1000 },
                        threadsBusy: perThread(b, "herald_ws_thread_busy_ratio"))
    }
}
