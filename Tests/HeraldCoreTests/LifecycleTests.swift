import Testing
@testable import HeraldCore

/// Lifecycle events without a socket: what FanOut reports, how the ledger numbers, stores,
/// occupies, vacates after the delay, reaps and resends.

private func at(_ micros: UInt64) -> FanOut.Now { FanOut.Now(monotonicMicros: micros, wallMillis: 1_700_000_000_000 + micros / 1000) }

private func ledger(vacate: UInt64 = 1_000_000, snapshot: UInt64 = 30_000_000) -> LifecycleLedger {
    LifecycleLedger(settings: .init(instance: "i1", node: "n1", vacateDelayMicros: vacate, snapshotMicros: snapshot))
}

/// The unsent events as (kind, parsed body, body text), marking them sent.
private func take(_ l: inout LifecycleLedger) throws -> [(LifecycleEvent.Kind, JSONValue, String)] {
    let out = try l.unsent.map { ($0.kind, try JSON.parse($0.body), String(decoding: $0.body, as: UTF8.self)) }
    l.sent()
    return out
}

@Suite struct LifecycleLedgerTests {
    @Test func eventsAreNumberedFromOneAndCarryTheirFields() throws {
        var l = ledger()
        l.record(.connected(client: "i1.1", user: "ann"), now: at(0))
        l.record(.subscribed(client: "i1.1", channel: "room:1"), now: at(0))
        l.record(.subscribed(client: "i1.1", channel: "room:1"), now: at(0))  // again: nothing
        l.record(.unsubscribed(client: "i1.1", channel: "room:2"), now: at(0))  // never subscribed: nothing
        l.record(.subscribed(client: "i9.9", channel: "room:1"), now: at(0))  // unknown client: nothing
        l.record(.disconnected(client: "i1.1", code: 4000), now: at(5_000))
        let events = try take(&l)
        #expect(events.map(\.0) == [.connect, .subscribe, .disconnect])
        #expect(events.map { $0.1["seq"]?.unsignedValue } == [1, 2, 3])
        #expect(events.allSatisfy { $0.1["instance"]?.stringValue == "i1" && $0.1["node"]?.stringValue == "n1" })
        #expect(events[2].2 == #"{"event":"disconnect","instance":"i1","node":"n1","seq":3,"time":1700000000005,"client":"i1.1","user":"ann","channels":["room:1"],"code":4000}"#)
        #expect(events[1].1["channel"]?.stringValue == "room:1" && events[1].1["user"]?.stringValue == "ann")
    }

    @Test func connectionsAreStoredBeforeTheirEventsAndRemovedOnlyOnceTheDisconnectIsConfirmed() throws {
        var l = ledger()
        l.record(.connected(client: "i1.1", user: nil), now: at(0))
        l.record(.subscribed(client: "i1.1", channel: "a"), now: at(0))
        #expect(l.takeStoreWrites() == [.init(client: "i1.1", entry: LifecycleClient(user: nil, channels: ["a"]))])
        _ = try take(&l)
        l.record(.disconnected(client: "i1.1", code: 1000), now: at(0))
        #expect(l.takeStoreWrites().isEmpty)  // the disconnect is not confirmed yet
        _ = try take(&l)
        l.confirmed(through: 2)
        #expect(l.takeStoreWrites().isEmpty)
        l.confirmed(through: 3)
        #expect(l.takeStoreWrites() == [.init(client: "i1.1", entry: nil)])
    }

    @Test func aFailedStoreIsRetried() {
        var l = ledger()
        l.record(.connected(client: "i1.1", user: "u"), now: at(0))
        let writes = l.takeStoreWrites()
        #expect(l.takeStoreWrites().isEmpty)
        l.storeFailed(writes)
        #expect(l.takeStoreWrites() == writes)
    }

    @Test func unconfirmedEventsArePublishedAgainWithTheSameNumbers() throws {
        var l = ledger()
        l.record(.connected(client: "i1.1", user: "u"), now: at(0))
        l.record(.connected(client: "i1.2", user: "v"), now: at(0))
        _ = try take(&l)
        #expect(l.unsent.isEmpty)
        l.confirmed(through: 1)
        l.record(.connected(client: "i1.3", user: "w"), now: at(0))
        l.publishFailed()
        #expect(l.unsent.map(\.seq) == [2, 3])
        l.sent()
        l.confirmed(through: 3)
        #expect(l.unconfirmedCount == 0 && l.unsent.isEmpty)
    }

    @Test func pastTheBoundTheOldestUnconfirmedAreDroppedAndCounted() {
        var settings = LifecycleLedger.Settings(instance: "i1", node: "n1", vacateDelayMicros: 0, snapshotMicros: 1_000_000_000)
        settings.maxUnconfirmed = 3
        var l = LifecycleLedger(settings: settings)
        for i in 1...5 { l.record(.connected(client: "i1.\(i)", user: nil), now: at(0)) }
        #expect(l.unsent.map(\.seq) == [3, 4, 5])
        #expect(l.dropped == 2)
    }

    @Test func aChannelIsOccupiedOnceAndVacatedOnlyAfterTheDelayWithoutASubscriber() throws {
        var l = ledger(vacate: 1_000_000)
        l.record(.connected(client: "i1.1", user: nil), now: at(0))
        l.record(.connected(client: "i1.2", user: nil), now: at(0))
        l.record(.subscribed(client: "i1.1", channel: "a"), now: at(0))
        l.record(.subscribed(client: "i1.2", channel: "a"), now: at(0))
        #expect(l.occupancyWork(nowMicros: 0).occupy == ["a"])
        l.occupied("a", version: 7, now: at(0))
        #expect(l.occupancyWork(nowMicros: 0) == ([], []))
        l.record(.unsubscribed(client: "i1.1", channel: "a"), now: at(100))
        l.record(.disconnected(client: "i1.2", code: 1000), now: at(200))
        #expect(l.nextDueMicros == 1_000_200)
        #expect(l.occupancyWork(nowMicros: 1_000_199).release.isEmpty)
        #expect(l.occupancyWork(nowMicros: 1_000_200).release == ["a"])
        l.released("a", version: 8, now: at(1_000_200))
        let events = try take(&l).filter { [.occupied, .vacated].contains($0.0) }
        #expect(events.map { "\($0.0.rawValue) \($0.1["channel"]!.stringValue!) \($0.1["version"]!.unsignedValue!)" } == ["occupied a 7", "vacated a 8"])
    }

    @Test func aSubscriberThatComesBackWithinTheDelayKeepsTheChannel() {
        var l = ledger(vacate: 1_000_000)
        l.record(.connected(client: "i1.1", user: nil), now: at(0))
        l.record(.subscribed(client: "i1.1", channel: "a"), now: at(0))
        l.occupied("a", version: 1, now: at(0))
        l.record(.unsubscribed(client: "i1.1", channel: "a"), now: at(10))
        l.record(.subscribed(client: "i1.1", channel: "a"), now: at(20))
        #expect(l.occupancyWork(nowMicros: 5_000_000) == ([], []))
    }

    @Test func anOccupancyConfirmedAfterTheLastSubscriberLeftIsReleasedAfterTheDelay() {
        var l = ledger(vacate: 1_000)
        l.record(.connected(client: "i1.1", user: nil), now: at(0))
        l.record(.subscribed(client: "i1.1", channel: "a"), now: at(0))
        l.record(.disconnected(client: "i1.1", code: 1000), now: at(0))
        #expect(l.occupancyWork(nowMicros: 0) == ([], []))
        // Another node's event sequence: Redis says this instance holds it without a version
        // (someone else held it already).
        l.occupied("b", version: nil, now: at(0))
        #expect(l.occupancyWork(nowMicros: 1_000).release == ["b"])
    }

    @Test func aLapsedLeaseStoresAndOccupiesEverythingAgainAndSnapshots() throws {
        var l = ledger()
        l.record(.connected(client: "i1.1", user: "u"), now: at(0))
        l.record(.subscribed(client: "i1.1", channel: "a"), now: at(0))
        l.occupied("a", version: 1, now: at(0))
        _ = l.takeStoreWrites()
        _ = try take(&l)
        l.leaseLapsed(now: at(10))
        #expect(l.takeStoreWrites().map(\.client) == ["i1.1"])
        #expect(l.occupancyWork(nowMicros: 10).occupy == ["a"])
        let snapshot = try take(&l)
        #expect(snapshot.map(\.0) == [.snapshot])
        #expect(snapshot[0].2.hasSuffix(#""clients":[{"client":"i1.1","user":"u","channels":["a"]}],"occupied":[]}"#))
    }

    @Test func snapshotsComeEveryPeriod() throws {
        var l = ledger(snapshot: 1_000)
        l.record(.connected(client: "i1.1", user: nil), now: at(0))
        l.snapshotDue(now: at(999))
        #expect(try take(&l).map(\.0) == [.connect])
        #expect(l.nextDueMicros == 1_000)
        l.snapshotDue(now: at(1_000))
        #expect(try take(&l).map(\.0) == [.snapshot])
        #expect(l.nextDueMicros == 2_000)
    }

    @Test func aReapEmitsTheLostInstancesDisconnectsAndVacatedChannels() throws {
        var l = ledger()
        l.reaped(.init(instance: "i2", clients: [("i2.5", LifecycleClient(user: "z", channels: ["b", "a"])), ("i2.1", LifecycleClient(user: nil))],
                       vacated: [("b", 12)]), now: at(0))
        let events = try take(&l)
        #expect(events.map(\.0) == [.nodeLost, .disconnect, .disconnect, .vacated])
        #expect(events[0].1["lost"]?.stringValue == "i2" && events[0].1["clients"]?.unsignedValue == 2)
        #expect(events[1].1["client"]?.stringValue == "i2.1" && events[1].1["code"]?.unsignedValue == 1006)
        #expect(events[2].1["channels"] == .array([.string("a"), .string("b")]))
        #expect(events.dropFirst().allSatisfy { $0.1["lost"]?.stringValue == "i2" && $0.1["instance"]?.stringValue == "i1" })
        #expect(events[3].1["version"]?.unsignedValue == 12)
    }

    @Test func aReapedInstanceIsReleasedOnlyOnceEveryEventOfItIsConfirmed() throws {
        var l = ledger()
        l.record(.connected(client: "i1.1", user: nil), now: at(0))
        l.reaped(.init(instance: "i2", clients: [("i2.1", LifecycleClient(user: nil))], vacated: [("c", 3)]), now: at(0))
        l.reaped(.init(instance: "i3", clients: [], vacated: []), now: at(0))
        let events = try take(&l)
        #expect(events.count == 1 + 3 + 1)
        l.confirmed(through: 3) // the connect, i2's node_lost and one disconnect: not its vacated
        #expect(l.takeReleasable().isEmpty)
        l.publishFailed()
        l.confirmed(through: 4)
        #expect(l.takeReleasable() == ["i2"])
        #expect(l.takeReleasable().isEmpty, "released once")
        l.confirmed(through: 5)
        let i3 = l.takeReleasable()
        #expect(i3 == ["i3"])
        l.releaseFailed(i3) // Redis did not take it: kept for the next round
        #expect(l.takeReleasable() == ["i3"])
    }

    @Test func aFarewellDisconnectsEveryoneWith1001AndReleasesAtOnce() throws {
        var l = ledger(vacate: 60_000_000)
        l.record(.connected(client: "i1.1", user: nil), now: at(0))
        l.record(.subscribed(client: "i1.1", channel: "a"), now: at(0))
        l.occupied("a", version: 1, now: at(0))
        _ = try take(&l)
        l.farewell(now: at(5))
        #expect(try take(&l).map { "\($0.0.rawValue) \($0.1["code"]?.unsignedValue ?? 0)" } == ["disconnect 1001"])
        #expect(l.occupancyWork(nowMicros: 5).release == ["a"])
    }

    @Test func storedEntriesRoundTripAndBadOnesAreRefused() {
        let entry = LifecycleClient(user: "a\"b", channels: ["x", "y"])
        #expect(LifecycleClient.decode(entry.encoded) == entry)
        #expect(LifecycleClient.decode(LifecycleClient(user: nil).encoded) == LifecycleClient(user: nil))
        for bad in ["", "[]", #"{"user":1,"channels":[]}"#, #"{"user":null}"#, #"{"user":null,"channels":[3]}"#] {
            #expect(LifecycleClient.decode(Array(bad.utf8)) == nil)
        }
    }
}

@Suite struct LifecycleFanOutTests {
    private func fanOut(lifecycle: Bool = true) -> FanOut {
        var f = FanOut(settings: FanOut.Settings(session: policy(anonymous: ["*"]), clientBacklog: 100, maxRingCapacity: 200,
                                                 coalesceMicros: 0, keepAliveMicros: 60_000_000))
        f.settings.instance = "i1"
        f.settings.lifecycle = lifecycle
        return f
    }
    private let now = FanOut.Now(monotonicMicros: 1_000_000, wallMillis: 1_000_000)

    private func inputs(_ actions: [FanOut.Action]) -> [LifecycleInput] {
        actions.compactMap { if case let .lifecycle(i) = $0 { return i } else { return nil } }
    }

    @Test func aConnectionIsReportedFromConnectToDisconnectWithItsCode() {
        var f = fanOut()
        let token = signer.sign(TokenClaims(sub: "ann", exp: 5_000, channels: ["*"]))
        #expect(inputs(f.handle(.opened(3, query: [("token", token), ("channel", "a")]), now: now))
            == [.connected(client: "i1.3", user: "ann"), .subscribed(client: "i1.3", channel: "a")])
        #expect(inputs(f.handle(.received(3, Array(#"{"op":"subscribe","channel":"a"}"#.utf8), binary: false), now: now)).isEmpty)
        #expect(inputs(f.handle(.received(3, Array(#"{"op":"subscribe","channel":"b"}"#.utf8), binary: false), now: now))
            == [.subscribed(client: "i1.3", channel: "b")])
        #expect(inputs(f.handle(.received(3, Array(#"{"op":"unsubscribe","channel":"a"}"#.utf8), binary: false), now: now))
            == [.unsubscribed(client: "i1.3", channel: "a")])
        #expect(inputs(f.handle(.closed(3, code: 4000), now: now)) == [.disconnected(client: "i1.3", code: 4000)])
    }

    @Test func aTokenSentLaterIsAnAuthAndARefusedConnectionIsNeverReported() {
        var f = fanOut()
        #expect(inputs(f.handle(.opened(1, query: []), now: now)) == [.connected(client: "i1.1", user: nil)])
        let token = signer.sign(TokenClaims(sub: "bob", exp: 5_000, channels: ["*"]))
        #expect(inputs(f.handle(.received(1, Array(#"{"op":"auth","token":"\#(token)"}"#.utf8), binary: false), now: now))
            == [.authenticated(client: "i1.1", user: "bob")])
        #expect(inputs(f.handle(.opened(2, query: [("token", "bad")]), now: now)).isEmpty)
        #expect(inputs(f.handle(.closed(2, code: 4001), now: now)).isEmpty)
    }

    @Test func presenceStreamsAreNotSubscriptionsAndNothingIsReportedWithoutTheSetting() {
        var p = policy(anonymous: ["*"])
        p.presencePatterns = ["room:*"]
        var f = FanOut(settings: FanOut.Settings(session: p, clientBacklog: 100, maxRingCapacity: 200, coalesceMicros: 0, keepAliveMicros: 60_000_000))
        f.settings.instance = "i1"
        f.settings.lifecycle = true
        _ = f.handle(.opened(1, query: []), now: now)
        #expect(inputs(f.handle(.received(1, Array(#"{"op":"subscribe","channel":"room:1","presence":true}"#.utf8), binary: false), now: now))
            == [.subscribed(client: "i1.1", channel: "room:1")])
        #expect(inputs(f.handle(.closed(1), now: now)) == [.disconnected(client: "i1.1", code: 1006)])

        var off = fanOut(lifecycle: false)
        #expect(inputs(off.handle(.opened(1, query: [("channel", "a")]), now: now)).isEmpty)
        #expect(inputs(off.handle(.closed(1), now: now)).isEmpty)
    }
}
