import CHiredis
import HeraldCore
import Synchronization

extension RedisClusterState {
    /// A PUB/SUB connection's commands: `SSUBSCRIBE` and `SUNSUBSCRIBE` split per slot (Redis
    /// takes shard channels of one slot a command) and sent to the slot's master; `PING` to
    /// every master, so that each connection's silence is noticed; anything else to the first.
    func sendPubSub(_ commands: [[String]]) throws(RedisError) {
        try closing { () throws(RedisError) in
            guard isConnected else { throw RedisError("not connected to the Redis Cluster") }
            guard let first = masters.first else { throw RedisError("the Redis Cluster map names no master") }
            var batches: [ClusterNode: [[[UInt8]]]] = [:]
            for command in commands {
                let verb = command.first?.uppercased() ?? ""
                switch verb {
                case "SSUBSCRIBE", "SUNSUBSCRIBE":
                    var perSlot: [Int: [String]] = [:]
                    for topic in command.dropFirst() {
                        perSlot[ClusterSlot.of(topic), default: []].append(topic)
                        if verb == "SUNSUBSCRIBE" { unsubscribing[topic, default: 0] += 1 }
                    }
                    for (slot, topics) in perSlot.sorted(by: { $0.key < $1.key }) {
                        guard let node = map.master(ofSlot: slot) else {
                            throw RedisError("no Redis Cluster master serves slot \(slot) in the map read last")
                        }
                        batches[node, default: []].append(([command[0]] + topics).map { Array($0.utf8) })
                    }
                case "PING":
                    for node in masters { batches[node, default: []].append([Array("PING".utf8)]) }
                default:
                    batches[first, default: []].append(command.map { Array($0.utf8) })
                }
            }
            for (node, batch) in batches { try connection(node).send(batch) }
        }
    }

    /// What every node connection has said, waiting up to `timeoutMillis` for the first reply
    /// (less when `wake` is signalled).
    func receiveAvailable(timeoutMillis: Int32, wake: RedisWake?) throws(RedisError) -> [RedisReply] {
        try closing { () throws(RedisError) -> [RedisReply] in
            guard isConnected else { throw RedisError("not connected to the Redis Cluster") }
            let open = Array(nodes.values.prefix(64))
            var replies: [RedisReply] = []
            for connection in open { replies += try connection.bufferedReplies() }
            if replies.isEmpty {
                let fds = open.map(\.fileDescriptor)
                var ready = [Int32](repeating: 0, count: open.count)
                let woke = fds.withUnsafeBufferPointer { f in
                    ready.withUnsafeMutableBufferPointer { r in
                        herald_redis_wait_many(f.baseAddress, Int32(open.count), r.baseAddress, wake?.fd ?? -1, timeoutMillis)
                    }
                }
                if woke > 0 {
                    for (connection, isReady) in zip(open, ready) where isReady != 0 { replies += try connection.readReady() }
                }
            }
            try checkPubSub(replies)
            return replies
        }
    }

    /// An `sunsubscribe` this connection did not ask for means Redis dropped the shard channel
    /// (its slot moved, or its master became a replica); a redirect means the map is old.
    /// Either fails the connection: its owner subscribes again on a fresh map and reads what
    /// it may have missed from Redis.
    private func checkPubSub(_ replies: [RedisReply]) throws(RedisError) {
        for reply in replies {
            if case let .error(e) = reply, let redirect = ClusterRedirect.parse(e) {
                let counters = RedisClusterCounters.shared
                switch redirect {
                case .moved: counters.moved.add(1, ordering: .relaxed)
                case .ask: counters.asked.add(1, ordering: .relaxed)
                case .tryAgain: counters.retried.add(1, ordering: .relaxed)
                }
                throw RedisError("Redis Cluster redirected a PUB/SUB command (\(e)); subscribing again on a fresh map")
            }
            guard case let .array(items) = reply, items.count == 3, items[0].text == "sunsubscribe",
                  let topic = items[1].text else { continue }
            if let asked = unsubscribing[topic] {
                unsubscribing[topic] = asked > 1 ? asked - 1 : nil
            } else {
                RedisClusterCounters.shared.shardChannelsDropped.add(1, ordering: .relaxed)
                throw RedisError("Redis Cluster dropped the shard channel \(topic) (its slot moved); subscribing again on a fresh map")
            }
        }
    }
}
