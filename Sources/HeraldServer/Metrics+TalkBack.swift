import HeraldCore

/// `/metrics` of client publishes and RPCs: outcomes, latency, late replies.
final class TalkBackMetrics: Sendable {
    static let publishOutcomes = ["published", "forbidden", "too_large", "rate_limited", "unavailable"]
    static let rpcOutcomes = ["result"] + RPCErrorCode.allCases.map(\.rawValue)
    let publishes: [String: Counter] = Dictionary(uniqueKeysWithValues: TalkBackMetrics.publishOutcomes.map { ($0, Counter()) })
    let calls: [String: Counter] = Dictionary(uniqueKeysWithValues: TalkBackMetrics.rpcOutcomes.map { ($0, Counter()) })
    /// Replies whose call was already answered (timed out, or a second reply) or never made here.
    let lateReplies = Counter()
    /// Calls of this node waiting for their answer (a gauge).
    let callsInFlight = Counter()
    static let durationBounds: [Int] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000]
    let durationBuckets: [Counter] = (0...TalkBackMetrics.durationBounds.count).map { _ in Counter() }
    let durationSumMillis = Counter()
    let durationCount = Counter()

    /// A call answered by a worker (result or worker error) after `millis`.
    func observe(millis: Int) {
        let index = Self.durationBounds.firstIndex(where: { millis <= $0 }) ?? Self.durationBounds.count
        durationBuckets[index].add()
        durationSumMillis.add(millis)
        durationCount.add()
    }

    func render(into out: inout String) {
        out += "# HELP herald_client_publishes_total Publishes from WebSocket clients, by outcome (published: confirmed by RabbitMQ; else the error code).\n"
        out += "# TYPE herald_client_publishes_total counter\n"
        for o in Self.publishOutcomes { out += "herald_client_publishes_total{outcome=\"\(o)\"} \(publishes[o]!.current)\n" }
        out += "# HELP herald_rpc_calls_total Client RPCs, by outcome (result, or the rpc_error code).\n"
        out += "# TYPE herald_rpc_calls_total counter\n"
        for o in Self.rpcOutcomes { out += "herald_rpc_calls_total{outcome=\"\(o)\"} \(calls[o]!.current)\n" }
        out += "# HELP herald_rpc_late_replies_total RPC replies dropped: their call had timed out or was already answered.\n"
        out += "# TYPE herald_rpc_late_replies_total counter\nherald_rpc_late_replies_total \(lateReplies.current)\n"
        out += "# HELP herald_rpc_in_flight Client RPCs of this node waiting for their answer.\n"
        out += "# TYPE herald_rpc_in_flight gauge\nherald_rpc_in_flight \(callsInFlight.current)\n"
        out += "# HELP herald_rpc_duration_seconds Time from publishing a call to RabbitMQ to its worker's answer.\n"
        out += "# TYPE herald_rpc_duration_seconds histogram\n"
        var cumulative = 0
        for (i, bound) in Self.durationBounds.enumerated() {
            cumulative += durationBuckets[i].current
            out += "herald_rpc_duration_seconds_bucket{le=\"\(Metrics.seconds(millis: bound))\"} \(cumulative)\n"
        }
        cumulative += durationBuckets[Self.durationBounds.count].current
        out += "herald_rpc_duration_seconds_bucket{le=\"+Inf\"} \(cumulative)\n"
        out += "herald_rpc_duration_seconds_sum \(Metrics.seconds(millis: durationSumMillis.current))\n"
        out += "herald_rpc_duration_seconds_count \(durationCount.current)\n"
    }
}
