import Testing
@testable import HeraldCore

@Suite struct LiveInterestTests {
    typealias Read = LiveInterest.Read

    func connected() -> LiveInterest {
        var i = LiveInterest(lingerMillis: 1_000)
        #expect(i.connected().isEmpty)
        return i
    }

    /// A subscribe's history is read only once Redis confirmed the topic: every message stored
    /// after the read then reaches the node.
    @Test func theHistoryReadWaitsForTheTopicsConfirmation() {
        var i = connected()
        let first = i.watch("news", hub: 0, request: 1)
        #expect(first.subscribe == ["news"] && first.read.isEmpty)
        let second = i.watch("news", hub: 1, request: 2)
        #expect(second.isEmpty, "one SUBSCRIBE per topic")
        #expect(!i.isConfirmed("news") && i.hubs(of: "news") == [0, 1])
        let confirmed = i.confirmed("news")
        #expect(confirmed.read == [Read(channel: "news", request: 1, hub: 0), Read(channel: "news", request: 2, hub: 1)])
        #expect(confirmed.catchUp.isEmpty && i.isConfirmed("news"))
        #expect(i.watch("news", hub: 0, request: 3).read == [Read(channel: "news", request: 3, hub: 0)], "confirmed: read at once")
        #expect(i.confirmed("news").isEmpty, "a confirmation nobody waits for changes nothing")
    }

    @Test func onlyTheThreadsThatWatchAChannelGetIt() {
        var i = connected()
        _ = i.watch("a", hub: 0, request: 1)
        _ = i.watch("b", hub: 1, request: 2)
        #expect(i.hubs(of: "a") == [0] && i.hubs(of: "b") == [1] && i.hubs(of: "c").isEmpty)
        i.unwatch("a", hub: 0, nowMillis: 10)
        #expect(i.hubs(of: "a").isEmpty)
    }

    /// Unwatched channels linger, then are unsubscribed; watching again in time keeps them.
    @Test func anUnwatchedChannelIsUnsubscribedAfterTheLinger() {
        var i = connected()
        _ = i.watch("a", hub: 0, request: 1)
        _ = i.watch("b", hub: 0, request: 2)
        _ = i.confirmed("a")
        _ = i.confirmed("b")
        i.unwatch("a", hub: 0, nowMillis: 100)
        i.unwatch("b", hub: 0, nowMillis: 100)
        #expect(i.expire(nowMillis: 1_099).isEmpty)
        #expect(i.watch("b", hub: 1, request: 3).read == [Read(channel: "b", request: 3, hub: 1)], "still subscribed")
        #expect(i.expire(nowMillis: 1_100).unsubscribe == ["a"])
        #expect(i.count == 1 && !i.isConfirmed("a"))
        #expect(i.watch("a", hub: 0, request: 4).subscribe == ["a"], "gone: subscribed again")
    }

    /// After a lost connection every watched channel is subscribed again and caught up once
    /// confirmed; requests that came meanwhile are read then; unwatched ones are forgotten.
    @Test func aLostConnectionResubscribesAndCatchesUpEveryWatchedChannel() {
        var i = connected()
        for (n, c) in ["a", "b", "idle"].enumerated() {
            _ = i.watch(c, hub: 0, request: UInt64(n))
            _ = i.confirmed(c)
        }
        i.unwatch("idle", hub: 0, nowMillis: 5)
        #expect(i.disconnected() == ["idle"])
        #expect(!i.isConfirmed("a") && i.count == 2)
        #expect(i.watch("c", hub: 1, request: 9).subscribe.isEmpty, "nothing is sent while disconnected")
        #expect(i.connected().subscribe == ["a", "b", "c"])
        let a = i.confirmed("a")
        #expect(a.catchUp == ["a"] && a.read.isEmpty)
        let c = i.confirmed("c")
        #expect(c.catchUp.isEmpty && c.read == [Read(channel: "c", request: 9, hub: 1)], "new since the loss: read, not caught up")
        #expect(i.confirmed("b").catchUp == ["b"])
    }

    /// A request that waited through the loss is read after the new confirmation.
    @Test func aWaitingRequestSurvivesALostConnection() {
        var i = connected()
        #expect(i.watch("a", hub: 0, request: 1).subscribe == ["a"])
        #expect(i.disconnected().isEmpty)
        #expect(i.confirmed("a").isEmpty, "a confirmation from the old connection counts for nothing")
        #expect(i.connected().subscribe == ["a"])
        let step = i.confirmed("a")
        #expect(step.read == [Read(channel: "a", request: 1, hub: 0)])
    }
}
