import HeraldCore
import Testing
@testable import HeraldRedis

/// The cluster client's pure parts: which argument routes a command, and the slot map read
/// from a `CLUSTER SLOTS` answer (the shape redis-server 7.0 gives).
@Suite struct RedisClusterTests {
    static func args(_ words: String...) -> [[UInt8]] { words.map { Array($0.utf8) } }

    @Test func aCommandIsRoutedByItsKeyAndAScriptByItsFirstKey() {
        let key = RedisClusterState.key(of:_:)
        #expect(key("GET", Self.args("GET", "herald:meta:{a}")) == Array("herald:meta:{a}".utf8))
        #expect(key("HSET", Self.args("HSET", "k", "f", "v")) == Array("k".utf8))
        #expect(key("EVALSHA", Self.args("EVALSHA", "abc", "2", "herald:meta:{a}", "herald:history:{a}", "x")) == Array("herald:meta:{a}".utf8))
        #expect(key("EVALSHA", Self.args("EVALSHA", "abc", "0", "x")) == nil)
        #expect(key("EVAL", Self.args("EVAL", "return 1", "nope")) == nil)
        for keyless in ["PING", "INFO", "ROLE", "CLUSTER", "ASKING"] {
            #expect(key(keyless, Self.args(keyless, "SLOTS")) == nil)
        }
        #expect(key("SSUBSCRIBE", Self.args("SSUBSCRIBE", "herald:live:{a}")) == Array("herald:live:{a}".utf8))
    }

    @Test func clusterSlotsBecomesTheMapWithTheAskedHostForAnEmptyOne() throws {
        let node = { (host: String, port: Int64, id: String) in RedisReply.array([.string(Array(host.utf8)), .integer(port), .string(Array(id.utf8))]) }
        let reply = RedisReply.array([
            .array([.integer(0), .integer(5460), node("127.0.0.1", 7000, "a"), node("127.0.0.1", 7003, "d")]),
            .array([.integer(5461), .integer(10922), node("", 7001, "b")]),
            .array([.integer(10923), .integer(16383), node("127.0.0.1", 7002, "c"), node("127.0.0.1", 7005, "f")]),
        ])
        let asked = ClusterNode(host: "10.0.0.9", port: 7001)
        let map = try #require(RedisClusterState.parseSlots(reply, asked: asked))
        #expect(map.uncovered == 0)
        #expect(map.masters == [ClusterNode(host: "127.0.0.1", port: 7000), ClusterNode(host: "10.0.0.9", port: 7001),
                                ClusterNode(host: "127.0.0.1", port: 7002)])
        #expect(map.ranges[0].replicas == [ClusterNode(host: "127.0.0.1", port: 7003)])
        #expect(map.master(of: "herald:meta:{room:1}") == ClusterNode(host: "127.0.0.1", port: 7002)) // slot 10,963
    }

    @Test func aMapWithAHoleOrAnAnswerOfAnotherShapeIsNotTakenWhole() {
        let partial = RedisReply.array([.array([.integer(0), .integer(99), .array([.string(Array("h".utf8)), .integer(1)])])])
        #expect(RedisClusterState.parseSlots(partial, asked: ClusterNode(host: "h", port: 1))?.uncovered == 16_384 - 100)
        #expect(RedisClusterState.parseSlots(.error("ERR This instance has cluster support disabled"), asked: ClusterNode(host: "h", port: 1)) == nil)
        #expect(RedisClusterState.parseSlots(.array([.array([.integer(5), .integer(1)])]), asked: ClusterNode(host: "h", port: 1)) == nil)
    }

    @Test func seedsAreHostPortPairs() throws {
        #expect(try RedisClusterConfig(["127.0.0.1:7000", "[::1]:7001"]).seeds == [ClusterNode(host: "127.0.0.1", port: 7000), ClusterNode(host: "::1", port: 7001)])
        #expect(throws: RedisError.self) { try RedisClusterConfig(["127.0.0.1"]) }
        #expect(throws: RedisError.self) { try RedisClusterConfig([]) }
    }
}
