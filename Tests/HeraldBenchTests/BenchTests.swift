import Testing
@testable import HeraldBench

@Suite struct HistogramTests {
    @Test func exactBelow2048AndWithinATenthOfAPercentAbove() {
        var h = Histogram()
        for v in UInt64(1)...1000 { h.record(v) }
        #expect(h.count == 1000)
        #expect(h.value(atPercentile: 50) == 500)
        #expect(h.value(atPercentile: 99) == 990)
        #expect(h.value(atPercentile: 100) == 1000)
        for v: UInt64 in [2_048, 3_000, 123_456, 9_876_543, 3_600_000_000] {
            var one = Histogram()
            one.record(v)
            let edge = Histogram.upperEdge(Histogram.index(v))
            #expect(edge >= v && Double(edge - v) <= Double(v) * 0.001, "value \(v) edge \(edge)")
            #expect(one.value(atPercentile: 50) == v, "a single value reads back as itself (capped at max)")
        }
    }

    @Test func percentilesNeverUnderstateATail() {
        var h = Histogram()
        for _ in 0..<990 { h.record(1_000) }
        for _ in 0..<10 { h.record(250_000) }
        #expect(h.value(atPercentile: 99) == 1_000)
        #expect(h.value(atPercentile: 99.9) >= 250_000)
        #expect(h.max == 250_000)
        var merged = Histogram()
        merged.merge(h)
        merged.merge(h)
        #expect(merged.count == 2_000 && merged.value(atPercentile: 99.9) >= 250_000)
    }
}

@Suite struct SequenceTrackerTests {
    @Test func countsLossDuplicatesAndDisorder() {
        var t = SequenceTracker()
        for n: UInt64 in [1, 2, 3, 5, 5, 4, 7, 6, 9, 2] { t.observe(n) }
        #expect(t.received == 8)
        #expect(t.duplicated == 2)
        #expect(t.outOfOrder == 2) // 4 after 5, 6 after 7
        #expect(t.missing(in: 1...10) == 2) // 8 and 10
        #expect(t.contiguous == 7)
    }

    @Test func contiguousAcrossWords() {
        var t = SequenceTracker()
        for n in UInt64(1)...200 where n != 130 { t.observe(n) }
        #expect(t.contiguous == 129)
        t.observe(130)
        #expect(t.contiguous == 200 && t.outOfOrder == 1)
    }
}

@Suite struct PayloadTests {
    @Test func bodyHasTheSizeAndFieldsComeBackFromAHeraldFrame() {
        let body = Payload.make(sentMicros: 1_764_000_000_123_456, n: 42, size: 100)
        #expect(body.count == 100)
        let frame = Array(#"{"type":"message","channel":"c","seq":7,"id":"x","time":1,"data":"#.utf8) + body + [UInt8(ascii: "}")]
        let batch = frame + [0x0A] + Array(#"{"type":"subscribed","channel":"c","epoch":"ab12","seq":3,"replay":0}"#.utf8)
        let lines = Payload.lines(batch)
        #expect(lines.count == 2)
        #expect(Payload.hasPrefix(Payload.typeMessage, batch, lines[0]))
        #expect(Payload.number(after: Payload.seqKey, in: batch, range: lines[0]) == 7)
        #expect(Payload.number(after: Payload.sentKey, in: batch, range: lines[0]) == 1_764_000_000_123_456)
        #expect(Payload.number(after: Payload.numberKey, in: batch, range: lines[0]) == 42)
        let seq = Payload.numberAndEnd(after: Payload.seqKey, in: batch, range: lines[0])
        #expect(seq?.value == 7 && seq.map { batch[$0.end] } == UInt8(ascii: ","))
        #expect(Payload.number(after: Payload.sentKey, in: batch, range: seq!.end..<lines[0].upperBound) == 1_764_000_000_123_456)
        #expect(Payload.lines(Array("\n\na\n\nbc\n".utf8)) == [2..<3, 5..<7])
        #expect(Payload.string(after: Payload.epochKey, in: batch, range: lines[1]) == "ab12")
        #expect(Payload.number(after: Payload.seqKey, in: batch, range: lines[1]) == 3)
    }
}

@Suite struct ServerMetricsTests {
    static let before = """
    # TYPE herald_writes_total counter
    herald_writes_total 100
    herald_deliveries_total 1000
    herald_ws_coalesce_window_seconds{thread="0"} 0.01
    herald_ws_coalesce_window_seconds{thread="1"} 0.01
    """
    static let after = """
    herald_writes_total 300
    herald_deliveries_total 5000
    herald_delivery_latency_seconds_bucket{le="+Inf"} 12
    herald_ws_coalesce_window_seconds{thread="0"} 0.01
    herald_ws_coalesce_window_seconds{thread="1"} 0.04
    herald_ws_thread_busy_ratio{thread="0"} 0.5
    herald_ws_thread_busy_ratio{thread="1"} 0.95
    """

    @Test func labelledSamplesKeepTheirLabelsAndEachThreadIsRead() {
        let b = ServerMetrics.parse(Self.after)
        #expect(b["herald_delivery_latency_seconds_bucket{le=\"+Inf\"}"] == 12)
        #expect(ServerMetrics.perThread(b, "herald_ws_thread_busy_ratio") == [0.5, 0.95])
        let i = ServerMetrics.interval(ServerMetrics.parse(Self.before), b, seconds: 2)
        #expect(i.writes == 200 && i.deliveries == 4000 && i.writesPerSecond == 100 && i.messagesPerWrite == 20)
        // The widest window and the busiest thread, and every thread's share in the report.
        #expect(i.windowMillis == 40 && i.busy == 0.95 && i.threadsBusy == [0.5, 0.95])
        #expect(i.summary.hasSuffix("window 40 ms, threads 50% + 95% busy") && i.deliveriesPerCPUSecond == nil)
        var withCPU = i
        withCPU.cpuSeconds = 0.5
        #expect(withCPU.deliveriesPerCPUSecond == 8000 && withCPU.summary.hasSuffix("95% busy, 8000 deliveries per CPU-second"))
    }
}

import HeraldLoadClients

@Suite struct TargetTests {
    @Test func parsesIPv4NamesAndBracketedIPv6() {
        let v6 = WebSocketClientPool.Target(url: "ws://[::1]:8080/ws?channel=a")
        #expect(v6?.host == "::1" && v6?.port == 8080 && v6?.path == "/ws?channel=a")
        #expect(v6?.authority == "[::1]:8080")
        #expect(WebSocketClientPool.Target(url: "ws://[2001:db8::7]/ws")?.port == 80)
        #expect(WebSocketClientPool.Target(url: "http://[::1]:81/sse")?.eventStream == true)
        let v4 = WebSocketClientPool.Target(url: "ws://127.0.0.1:9/ws")
        #expect(v4?.host == "127.0.0.1" && v4?.authority == "127.0.0.1:9")
        #expect(WebSocketClientPool.Target(url: "ws://::1:8080/ws") == nil, "IPv6 without brackets")
        #expect(WebSocketClientPool.Target(url: "ws://[::1/ws") == nil)
        #expect(WebSocketClientPool.Target(url: "ws://[::1]x/ws") == nil)
    }
}
