import Testing
@testable import HeraldCore

/// Redis Cluster routing decided without a cluster: slots, the map, and MOVED/ASK sequences.
@Suite struct ClusterSlotsTests {
    @Test func slotsAreRedisClustersCRC16OfTheHashTag() {
        #expect(ClusterSlot.crc16(Array("123456789".utf8)) == 0x31C3)   // the XMODEM check value
        // Slots as `CLUSTER KEYSLOT` answers them.
        #expect(ClusterSlot.of("foo") == 12_182)
        #expect(ClusterSlot.of("bar") == 5_061)
        #expect(ClusterSlot.of("hello") == 866)
        #expect(ClusterSlot.of("") == 0)
        // Checked against redis-server 7.0 (cluster-enabled yes) on this machine.
        #expect([ClusterSlot.of("{user1000}.following"), ClusterSlot.of("herald:{room:1}:history"), ClusterSlot.of("foo{{bar}}zap"),
                 ClusterSlot.of("a{}b")] == [3_443, 10_963, 4_015, 13_694])
        // Hash tags: the first {...} with something inside decides.
        #expect(ClusterSlot.of("{user1000}.following") == ClusterSlot.of("{user1000}.followers"))
        #expect(ClusterSlot.of("{user1000}.following") == ClusterSlot.of("user1000"))
        #expect(ClusterSlot.of("foo{}{bar}") == ClusterSlot.of("foo{}{bar}") && String(decoding: ClusterSlot.hashedPart(Array("foo{}{bar}".utf8)), as: UTF8.self) == "foo{}{bar}")
        #expect(String(decoding: ClusterSlot.hashedPart(Array("foo{{bar}}zap".utf8)), as: UTF8.self) == "{bar")
        #expect(String(decoding: ClusterSlot.hashedPart(Array("foo{bar}{zap}".utf8)), as: UTF8.self) == "bar")
        #expect(String(decoding: ClusterSlot.hashedPart(Array("herald:{room:1}:history".utf8)), as: UTF8.self) == "room:1")
    }

    static let a = ClusterNode(host: "127.0.0.1", port: 7001)
    static let b = ClusterNode(host: "127.0.0.1", port: 7002)
    static let c = ClusterNode(host: "127.0.0.1", port: 7003)
    static let map = ClusterSlotMap([
        .init(slots: 0...5460, master: a, replicas: [ClusterNode(host: "127.0.0.1", port: 7004)]),
        .init(slots: 5461...10922, master: b),
        .init(slots: 10923...16383, master: c),
    ])

    @Test func theMapNamesEachSlotsMasterAndWhatNobodyServes() {
        #expect(Self.map.master(of: "hello") == Self.a)      // slot 866
        #expect(Self.map.master(of: "bar") == Self.a)        // 5061
        #expect(Self.map.master(ofSlot: 5_461) == Self.b)
        #expect(Self.map.master(of: "foo") == Self.c)        // 12182
        #expect(Self.map.masters == [Self.a, Self.b, Self.c] && Self.map.uncovered == 0)
        let partial = ClusterSlotMap([.init(slots: 0...99, master: Self.a)])
        #expect(partial.uncovered == 16_284 && partial.master(ofSlot: 100) == nil && partial.master(ofSlot: 16_384) == nil)
        #expect(ClusterNode.parse("10.0.0.5:7001@17001") == ClusterNode(host: "10.0.0.5", port: 7001))
        #expect(ClusterNode.parse("[::1]:7001") == ClusterNode(host: "::1", port: 7001))
        #expect(ClusterNode.parse("nohost") == nil && ClusterNode.parse(":7001") == nil && ClusterNode.parse("h:0") == nil)
    }

    @Test func redirectsAreReadFromTheirErrors() {
        #expect(ClusterRedirect.parse("MOVED 3999 127.0.0.1:7002") == .moved(slot: 3_999, node: Self.b))
        #expect(ClusterRedirect.parse("ASK 3999 127.0.0.1:7003") == .ask(slot: 3_999, node: Self.c))
        #expect(ClusterRedirect.parse("TRYAGAIN Multiple keys request during rehashing of slot") == .tryAgain)
        #expect(ClusterRedirect.parse("CLUSTERDOWN The cluster is down") == .tryAgain)
        #expect(ClusterRedirect.parse("MOVED 99999 127.0.0.1:7002") == nil)
        #expect(ClusterRedirect.parse("MOVED x 127.0.0.1:7002") == nil)
        #expect(ClusterRedirect.parse("ERR unknown command") == nil && ClusterRedirect.parse("") == nil)
    }

    @Test func aMovedSlotIsCorrectedInTheMapAndTheMapIsReadAgain() {
        var map = Self.map
        var route = ClusterRoute(slot: 866)
        #expect(route.first(map) == .send(to: Self.a, asking: false))
        // A failover promoted a's replica: MOVED to it, then the answer.
        let promoted = ClusterNode(host: "127.0.0.1", port: 7004)
        #expect(route.after(error: "MOVED 866 127.0.0.1:7004", map: &map) == .send(to: promoted, asking: false))
        #expect(route.refreshMap && map.master(ofSlot: 866) == promoted && map.master(ofSlot: 867) == Self.a)
        #expect(route.after(error: "WRONGTYPE Operation against a key holding the wrong kind of value", map: &map) == nil)
        // The next command of that slot goes straight to the new master.
        var next = ClusterRoute(slot: 866)
        #expect(next.first(map) == .send(to: promoted, asking: false))
    }

    @Test func anAskIsFollowedOnceWithAskingAndLeavesTheMapAlone() {
        var map = Self.map
        var route = ClusterRoute(slot: 866)
        _ = route.first(map)
        #expect(route.after(error: "ASK 866 127.0.0.1:7003", map: &map) == .send(to: Self.c, asking: true))
        #expect(!route.refreshMap && map == Self.map)
        // The migration finished meanwhile: the target says MOVED to itself.
        #expect(route.after(error: "MOVED 866 127.0.0.1:7003", map: &map) == .send(to: Self.c, asking: false))
        #expect(map.master(ofSlot: 866) == Self.c)
    }

    @Test func tryAgainWaitsAndEndlessRedirectsFail() {
        var map = Self.map
        var route = ClusterRoute(slot: 12_182)
        _ = route.first(map)
        #expect(route.after(error: "CLUSTERDOWN The cluster is down", map: &map) == .retry(to: Self.c, afterMillis: ClusterRoute.retryMillis))
        for _ in 2...ClusterRoute.maxRedirects {
            guard case .send? = route.after(error: "MOVED 12182 127.0.0.1:7001", map: &map) else { Issue.record("not followed"); return }
        }
        guard case let .fail(reason)? = route.after(error: "MOVED 12182 127.0.0.1:7002", map: &map) else {
            Issue.record("a sixth redirect was followed")
            return
        }
        #expect(reason.contains("redirected 5 times"))
        var nobody = ClusterRoute(slot: 200)
        guard case .fail = nobody.first(ClusterSlotMap([])) else { Issue.record("routed with an empty map"); return }
        #expect(nobody.refreshMap)
    }
}
