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

    /// Every unlabelled `herald_…` sample.
    func read() throws -> [String: Double] {
        let body = String(decoding: try http.get(path: path).body, as: UTF8.self)
        var samples: [String: Double] = [:]
        for line in body.split(separator: "\n") where line.hasPrefix("herald_") && !line.contains("{") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let v = Double(parts[1]) { samples[String(parts[0])] = v }
        }
        return samples
    }

    /// A stretch between two reads.
    struct Interval: Sendable {
        var writes: Double
        var deliveries: Double
        var seconds: Double
        /// The coalescing window at the end of the stretch, ms.
        var windowMillis: Double?
        /// The WebSocket thread's CPU share at the end of the stretch.
        var busy: Double?
        var writesPerSecond: Double { seconds > 0 ? writes / seconds : 0 }
        var messagesPerWrite: Double { writes > 0 ? deliveries / writes : 0 }
        var summary: String {
            "server \(fmt(writesPerSecond, 0)) writes/s, \(fmt(messagesPerWrite, 1)) messages/write" +
                (windowMillis.map { ", window \(fmt($0, 0)) ms" } ?? "") + (busy.map { ", thread \(fmt($0 * 100, 0))% busy" } ?? "")
        }
        var json: String {
            "{\"writes\":\(Int(writes)),\"deliveries\":\(Int(deliveries)),\"writes_per_sec\":\(fmt(writesPerSecond, 1)),\"messages_per_write\":\(fmt(messagesPerWrite, 2)),\"window_ms\":\(windowMillis.map { fmt($0, 1) } ?? "null"),\"ws_thread_busy\":\(busy.map { fmt($0, 3) } ?? "null")}"
        }
    }

    static func interval(_ a: [String: Double], _ b: [String: Double], seconds: Double) -> Interval {
        func delta(_ name: String) -> Double { (b[name] ?? 0) - (a[name] ?? 0) }
        return Interval(writes: delta("herald_writes_total"), deliveries: delta("herald_deliveries_total"), seconds: seconds,
                        windowMillis: b["herald_ws_coalesce_window_seconds"].map { $0 * 1000 },
                        busy: b["herald_ws_thread_busy_ratio"])
    }
}
