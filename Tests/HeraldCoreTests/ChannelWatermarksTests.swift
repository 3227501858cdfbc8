import Testing
@testable import HeraldCore

/// The memory that lets the sequencer notice a Redis that came back behind.
@Suite struct ChannelWatermarksTests {
    typealias Mark = ChannelWatermarks.Mark

    @Test func withinAnEpochTheMarkOnlyRises() {
        var w = ChannelWatermarks()
        w.record("news", epoch: "e1", seq: 10)
        w.record("news", epoch: "e1", seq: 7) // a redelivered duplicate keeps its older seq
        #expect(w.mark("news") == Mark(epoch: "e1", seq: 10))
        w.record("news", epoch: "e1", seq: 11)
        #expect(w.mark("news") == Mark(epoch: "e1", seq: 11))
        #expect(w.mark("other") == nil)
    }

    @Test func aNewEpochReplacesTheMarkEvenWithALowerSeq() {
        var w = ChannelWatermarks()
        w.record("news", epoch: "e1", seq: 10)
        w.record("news", epoch: "e2", seq: 1)
        #expect(w.mark("news") == Mark(epoch: "e2", seq: 1))
        #expect(w.marks("news") == [Mark(epoch: "e2", seq: 1), Mark(epoch: "e1", seq: 10)])
    }

    @Test func anEpochSeenAgainKeepsItsHighestSeqAndBecomesTheNewest() {
        // Redis went back to e1 (a failover turned back) after e2 had started: e1's mark must
        // still say 10, so a counter of 7 in e1 is caught as behind.
        var w = ChannelWatermarks()
        w.record("news", epoch: "e1", seq: 10)
        w.record("news", epoch: "e2", seq: 3)
        w.record("news", epoch: "e1", seq: 8)
        #expect(w.marks("news") == [Mark(epoch: "e1", seq: 10), Mark(epoch: "e2", seq: 3)])
        w.record("news", epoch: "e1", seq: 11)
        #expect(w.marks("news") == [Mark(epoch: "e1", seq: 11), Mark(epoch: "e2", seq: 3)])
    }

    @Test func onlyTheLastEpochsOfAChannelAreKept() {
        var w = ChannelWatermarks(epochsPerChannel: 2)
        for (i, e) in ["e1", "e2", "e3"].enumerated() { w.record("news", epoch: e, seq: UInt64(i + 1)) }
        #expect(w.marks("news") == [Mark(epoch: "e3", seq: 3), Mark(epoch: "e2", seq: 2)])
    }

    @Test func itRemembersAtLeastTheMostRecentHalfOfItsCapacity() {
        var w = ChannelWatermarks(capacity: 4)
        for (i, c) in ["a", "b", "c", "d", "e"].enumerated() { w.record(c, epoch: "e", seq: UInt64(i + 1)) }
        // Generations of 2: {a, b} was dropped when {c, d} filled and e started a new one.
        #expect(w.mark("a") == nil && w.mark("b") == nil)
        #expect(w.mark("c") == Mark(epoch: "e", seq: 3) && w.mark("d") == Mark(epoch: "e", seq: 4))
        #expect(w.mark("e") == Mark(epoch: "e", seq: 5))
        // A channel seen again moves to the current generation and survives the next turn.
        w.record("c", epoch: "e", seq: 3)
        w.record("f", epoch: "e", seq: 6)
        #expect(w.mark("c") == Mark(epoch: "e", seq: 3) && w.mark("d") == nil)
        #expect(w.count <= 4)
    }
}
