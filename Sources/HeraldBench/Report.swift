#if canImport(Glibc)
import Glibc
#endif

/// The results as JSON (for machines), a summary (for people) and a self-contained HTML page.
extension BenchResult {
    static let percentiles: [(String, Double)] = [("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)]

    func ms(_ micros: UInt64) -> Double { Double(micros) / 1000 }

    func latencyJSON(_ h: Histogram) -> String {
        var parts = Self.percentiles.map { "\"\($0.0)\":\(fmt(ms(h.value(atPercentile: $0.1)), 3))" }
        parts.append("\"max\":\(fmt(ms(h.max), 3))")
        parts.append("\"mean\":\(fmt(h.mean / 1000, 3))")
        parts.append("\"samples\":\(h.count)")
        return "{" + parts.joined(separator: ",") + "}"
    }

    public func json() -> String {
        func num(_ v: Double?) -> String { v.map { $0.isFinite ? fmt($0, 3) : "null" } ?? "null" }
        var f: [(String, String)] = [
            ("scenario", "\"\(options.scenario.rawValue)\""),
            ("server", options.kind == .herald ? "\"herald\"" : "\"peer\""),
            ("urls", "[" + options.urls.map { "\"\($0)\"" }.joined(separator: ",") + "]"),
            ("clients", "\(options.clients)"),
            ("transport", options.eventStream ? "\"sse\"" : "\"websocket\""),
            ("channels", "\(options.channels)"),
            ("connected", "\(connected)"),
            ("connect_failures", "\(connectFailures)"),
            ("closed_by_server", "\(closes)"),
            ("connect_seconds", num(connectSeconds)),
            ("connect_ms", latencyJSON(connectTimes)),
            ("published", "\(published)"),
            ("publish_failures", "\(publishFailures)"),
            ("message_bytes", "\(options.size)"),
            ("deliveries", "\(deliveries)"),
            ("deliveries_per_sec", num(deliveriesPerSecond)),
            ("permessage_deflate", "\(options.permessageDeflate)"),
            ("compressed_connections", "\(compressedConnections)"),
            ("wire_bytes_per_delivery", num(wireBytesPerDelivery)),
            ("lost", "\(tally.lost)"),
            ("duplicated", "\(tally.duplicated)"),
            ("out_of_order", "\(tally.outOfOrder)"),
            ("clients_with_loss", "\(tally.clientsWithLoss)"),
            ("latency_ms", latencyJSON(latency)),
            ("time_to_first_message_ms", latencyJSON(firstMessageTimes)),
            ("server_cpu_percent", num(serverCPUPercent)),
            ("bench_cpu_percent", num(benchCPUPercent)),
            ("server_rss_kb", serverRSSAfterKB.map(String.init) ?? "null"),
            ("memory_per_connection_kb", num(memoryPerConnectionKB)),
            ("server_writes", server?.json ?? "null"),
        ]
        if options.scenario.risesRate {
            f.append(("highest_clean_rate", num(bestCleanStep?.rate)))
            f.append(("highest_clean_deliveries_per_sec", num(bestCleanStep?.deliveriesPerSecond)))
            f.append(("steps", "[" + steps.map {
                "{\"rate\":\(fmt($0.rate, 1)),\"deliveries_per_sec\":\(fmt($0.deliveriesPerSecond, 1)),\"p99_ms\":\(fmt($0.p99Millis, 3)),\"lost\":\($0.lost),\"clean\":\($0.clean),"
                    + "\"publisher_lag_ms\":\(fmt($0.publisherLagMillis, 1)),\"wire_bytes_per_delivery\":\(num($0.wireBytesPerDelivery)),"
                    + "\"cpu_percent\":{\($0.cpuPercent.map { "\"\($0.name)\":\(fmt($0.percent, 1))" }.joined(separator: ","))},"
                    + "\"cpu_us_per_message\":{\($0.cpuMicrosPerMessage.map { "\"\($0.name)\":\(fmt($0.micros, 1))" }.joined(separator: ","))},"
                    + "\"server_writes\":\($0.server?.json ?? "null")}"
            }.joined(separator: ",") + "]"))
        }
        if options.scenario == .storm {
            f.append(("history", "\(options.history)"))
            f.append(("join_catch_up_seconds", num(joinCatchUpSeconds)))
            f.append(("reconnect_catch_up_seconds", num(reconnectCatchUpSeconds)))
            f.append(("caught_up", "\(caughtUp)"))
            f.append(("resumed", "\(tally.resumed)"))
            f.append(("recovered", "\(tally.recovered)"))
        }
        if let p = presence {
            f.append(("presence", "{\"lists_complete\":\(p.complete),\"all_complete_seconds\":\(num(p.allCompleteMicros.map { Double($0) / 1e6 })),"
                      + "\"frames_per_client_mean\":\(num(p.meanFramesPerClient)),\"frames_per_client_max\":\(p.maxFramesPerClient)}"))
        }
        if options.scenario == .sequencer {
            f.append(("sequenced_per_sec", num(sequencedPerSecond)))
            f.append(("sequencer_seconds", num(sequencerSeconds)))
            f.append(("sequencer_drains_per_sec", "[" + sequencerDrains.map { num($0) }.joined(separator: ",") + "]"))
            f.append(("broker_alone_per_sec", num(brokerAlonePerSecond)))
        }
        f.append(("timeline", "[" + timeline.map {
            "{\"t\":\(fmt($0.second, 2)),\"deliveries_per_sec\":\(fmt($0.deliveriesPerSecond, 1)),\"p99_ms\":\(fmt($0.p99Millis, 3))}"
        }.joined(separator: ",") + "]"))
        return "{" + f.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    public func summary() -> String {
        var lines: [String] = []
        lines.append("herald bench \(options.scenario.rawValue): \(options.clients) clients on \(options.channels) channel(s), \(options.urls.joined(separator: " "))"
                     + (options.eventStream ? " over Server-Sent Events" : ""))
        if options.scenario != .sequencer { lines.append("  connected       \(connected)/\(options.clients) in \(fmt(connectSeconds, 2)) s (\(connectFailures) failed; connect p50 \(fmt(ms(connectTimes.value(atPercentile: 50)), 1)) ms, p99 \(fmt(ms(connectTimes.value(atPercentile: 99)), 1)) ms)") }
        if published > 0 && options.scenario == .sequencer {
            lines.append("  published       \(published) messages of \(options.size) B (\(publishFailures) refused)")
        } else if published > 0 {
            lines.append("  published       \(published) messages of \(options.size) B (\(publishFailures) refused)")
            lines.append("  deliveries      \(deliveries) (\(fmt(deliveriesPerSecond, 0))/s)")
            if let perDelivery = wireBytesPerDelivery {
                lines.append("  on the wire     \(fmt(perDelivery, 1)) B per delivery\(options.permessageDeflate ? ", permessage-deflate on \(compressedConnections) of \(connected) connections" : "")")
            }
            lines.append("  correctness     lost \(tally.lost), duplicated \(tally.duplicated), out of order \(tally.outOfOrder)\(closes > 0 ? ", \(closes) closed by the server" : "")")
            lines.append("  latency         p50 \(fmt(ms(latency.value(atPercentile: 50)), 2)) ms  p90 \(fmt(ms(latency.value(atPercentile: 90)), 2)) ms  p99 \(fmt(ms(latency.value(atPercentile: 99)), 2)) ms  p99.9 \(fmt(ms(latency.value(atPercentile: 99.9)), 2)) ms  max \(fmt(ms(latency.max), 2)) ms")
            if firstMessageTimes.count > 0 {
                lines.append("  first message   p50 \(fmt(ms(firstMessageTimes.value(atPercentile: 50)), 1)) ms, max \(fmt(ms(firstMessageTimes.max), 1)) ms after publishing began")
            }
        }
        if !steps.isEmpty {
            for s in steps {
                lines.append("  step \(fmt(s.rate, 0)) msg/s   \(fmt(s.deliveriesPerSecond, 0)) deliveries/s  p99 \(fmt(s.p99Millis, 1)) ms  lost \(s.lost)  publisher lag \(fmt(s.publisherLagMillis, 0)) ms\(s.wireBytesPerDelivery.map { "  \(fmt($0, 1)) B/delivery" } ?? "")\(s.cpuSummary)  \(s.clean ? "clean" : "NOT clean")\(s.server.map { "  " + $0.summary } ?? "")")
            }
            if let best = bestCleanStep {
                lines.append("  highest clean   \(fmt(best.rate, 0)) msg/s = \(fmt(best.deliveriesPerSecond, 0)) deliveries/s (p99 ≤ \(fmt(options.p99BoundMillis, 0)) ms, 0 lost, publisher on schedule)")
            } else {
                lines.append("  highest clean   none (the first step already lost messages or missed the p99 bound)")
            }
        }
        if let p = presence {
            lines.append("  presence        \(p.complete)/\(options.clients) member lists complete"
                         + (p.allCompleteMicros.map { " \(fmt(Double($0) / 1e6, 2)) s after the first connect" } ?? "")
                         + "; presence/join/leave frames per client: mean \(fmt(p.meanFramesPerClient, 1)), max \(p.maxFramesPerClient)")
        }
        if let j = joinCatchUpSeconds {
            lines.append("  storm           \(options.clients) joined and caught up with \(options.history) messages in \(fmt(j, 3)) s; after dropping all, \(caughtUp) caught up in \(fmt(reconnectCatchUpSeconds ?? 0, 3)) s (\(tally.recovered) of \(tally.resumed) resumed with recovered: true)")
        }
        if let r = sequencedPerSecond {
            let each = options.count
            if sequencerDrains.count > 1 {
                lines.append("  sequencer       median of \(sequencerDrains.count) drains of \(each) messages, stored in Redis and acked: \(fmt(r, 0)) messages/s (\(sequencerDrains.map { fmt($0, 0) }.joined(separator: ", ")))")
            } else {
                lines.append("  sequencer       \(published) messages stored in Redis and acked in \(fmt(sequencerSeconds ?? 0, 2)) s = \(fmt(r, 0)) messages/s")
            }
            if let b = brokerAlonePerSecond {
                lines.append("  broker alone    \(fmt(b, 0)) messages/s: the same queue drained by a consumer that only acks (\(fmt(100 * r / b, 0))% of it)")
            }
        }
        if let m = memoryPerConnectionKB {
            lines.append("  memory          \(fmt(m, 2)) KB of server RSS per connection (\(serverRSSBeforeKB ?? 0) → \(serverRSSAfterKB ?? 0) KB)")
        }
        if let s = server { lines.append("  server writes   \(s.summary)") }
        if let c = serverCPUPercent { lines.append("  server CPU      \(fmt(c, 0))% of one core") }
        if let c = benchCPUPercent { lines.append("  bench CPU       \(fmt(c, 0))% of one core") }
        return lines.joined(separator: "\n")
    }

    /// A self-contained page: the latency percentile curve and throughput over time, as SVG.
    public func html() -> String {
        let title = "herald bench \(options.scenario.rawValue): \(options.clients) clients"
        let marks: [Double] = [0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100]
        let curve = marks.map { p -> (Double, Double) in
            let x = p >= 100 ? 4.0 : min(4.0, -log10(1 - p / 100)) // 0 at p0, 1 at p90, 2 at p99, 3 at p99.9
            return (x, ms(latency.value(atPercentile: p)))
        }
        let latencySVG = Self.chart(points: curve, xLabels: [(0, "p0"), (0.301, "p50"), (1, "p90"), (2, "p99"), (3, "p99.9"), (4, "max")],
                                    yUnit: "ms", title: "End-to-end latency by percentile (publish → client)")
        let tp = timeline.map { ($0.second, $0.deliveriesPerSecond) }
        let maxT = timeline.last?.second ?? 1
        let throughputSVG = Self.chart(points: tp, xLabels: stride(from: 0.0, through: maxT, by: max(1, (maxT / 6).rounded())).map { ($0, "\(Int($0)) s") },
                                       yUnit: "deliveries/s", title: "Deliveries per second over time")
        let rows = summary().split(separator: "\n").map { "<tr><td>\(Self.escape(String($0)))</td></tr>" }.joined()
        return """
        <!doctype html><html lang="en"><head><meta charset="utf-8"><title>\(Self.escape(title))</title>
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#18202a;background:#f6f7f9}
        h1{font-size:20px}section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:12px 16px;margin:12px 0;max-width:900px}
        table{font-family:ui-monospace,monospace;font-size:12.5px;white-space:pre}svg{width:100%;height:auto}
        .axis{stroke:#99a;stroke-width:1}.grid{stroke:#eef;stroke-width:1}.line{fill:none;stroke:#2f6fdf;stroke-width:2.5}
        .dot{fill:#2f6fdf}text{font:12px system-ui,sans-serif;fill:#556}</style></head><body>
        <h1>\(Self.escape(title))</h1>
        <section id="latency">\(latencySVG)</section>
        <section id="throughput">\(throughputSVG)</section>
        <section><table>\(rows)</table></section>
        <script type="application/json" id="data">\(json())</script>
        </body></html>
        """
    }

    static func chart(points: [(Double, Double)], xLabels: [(Double, String)], yUnit: String, title: String) -> String {
        let w = 860.0, h = 320.0, left = 70.0, right = 20.0, top = 36.0, bottom = 40.0
        let maxX = max(points.map(\.0).max() ?? 1, xLabels.map(\.0).max() ?? 1, 0.001)
        let maxY = max(points.map(\.1).max() ?? 1, 0.001) * 1.1
        func px(_ x: Double) -> Double { left + x / maxX * (w - left - right) }
        func py(_ y: Double) -> Double { h - bottom - y / maxY * (h - top - bottom) }
        var svg = "<svg viewBox=\"0 0 \(Int(w)) \(Int(h))\" role=\"img\" aria-label=\"\(escape(title))\">"
        svg += "<text x=\"\(Int(left))\" y=\"20\" style=\"font-weight:600;font-size:14px\">\(escape(title)) (\(escape(yUnit)))</text>"
        for i in 0...4 {
            let y = maxY / 4 * Double(i)
            svg += "<line class=\"grid\" x1=\"\(left)\" x2=\"\(w - right)\" y1=\"\(py(y))\" y2=\"\(py(y))\"/>"
            svg += "<text x=\"\(left - 6)\" y=\"\(py(y) + 4)\" text-anchor=\"end\">\(fmt(y, y < 10 ? 1 : 0))</text>"
        }
        svg += "<line class=\"axis\" x1=\"\(left)\" x2=\"\(w - right)\" y1=\"\(h - bottom)\" y2=\"\(h - bottom)\"/>"
        for (x, label) in xLabels {
            svg += "<text x=\"\(px(x))\" y=\"\(h - bottom + 18)\" text-anchor=\"middle\">\(escape(label))</text>"
        }
        if !points.isEmpty {
            svg += "<polyline class=\"line\" points=\"" + points.map { "\(fmt(px($0.0), 1)),\(fmt(py($0.1), 1))" }.joined(separator: " ") + "\"/>"
            for p in points { svg += "<circle class=\"dot\" cx=\"\(fmt(px(p.0), 1))\" cy=\"\(fmt(py(p.1), 1))\" r=\"3\"/>" }
        }
        return svg + "</svg>"
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}
