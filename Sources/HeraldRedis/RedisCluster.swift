import CHiredis
import HeraldCore
import Synchronization

/// Redis Cluster (`--redis-cluster HOST:PORT`, repeatable): the nodes the slot map is first
/// read from. Any live node of the cluster will do; the map names the rest.
public struct RedisClusterConfig: Sendable, Equatable {
    public let seeds: [ClusterNode]
    public init(seeds: [ClusterNode]) { self.seeds = seeds }

    public init(_ texts: [String]) throws(RedisError) {
        var seeds: [ClusterNode] = []
        for text in texts {
            guard let node = ClusterNode.parse(text) else { throw RedisError("a Redis Cluster seed is HOST:PORT (got \(text))") }
            seeds.append(node)
        }
        guard !seeds.isEmpty else { throw RedisError("--redis-cluster needs at least one HOST:PORT") }
        self.init(seeds: seeds)
    }
}

/// One connection to a Redis Cluster, behind a `RedisConnection`: the slot map (`CLUSTER
/// SLOTS`), a connection per master opened when first needed, and the commands sent and not yet
/// answered. Each command goes to the master of its key's slot; a pipeline is split per master
/// and its replies put back in order; `MOVED` and `ASK` are followed (`ClusterRoute`) once every
/// reply of the batch is read, and a `MOVED` has the map read again before the next batch.
/// `SCRIPT` goes to every master, `WAIT` to every master written since the last `WAIT` (the
/// smallest count is the answer). On a PUB/SUB connection, shard channels are subscribed on
/// their slot's master, and an `sunsubscribe` nobody asked for (the slot moved, or its master
/// was demoted) fails the connection so that its owner subscribes again on a fresh map.
///
/// - Important: confined to its owner's thread. Any error closes every node connection.
final class RedisClusterState {
    private enum Merge { case first, minimum }
    private struct Pending {
        var args: [[UInt8]]
        var targets: [ClusterNode]
        var route: ClusterRoute?
        var merge: Merge
    }

    let config: RedisClusterConfig
    let endpoint: RedisEndpoint
    let timeoutMillis: Int
    /// The slot map, and its masters (kept with it: working them out scans every slot).
    private(set) var map = ClusterSlotMap([]) {
        didSet { masters = map.masters }
    }
    private(set) var masters: [ClusterNode] = []
    var nodes: [ClusterNode: RedisConnection] = [:]
    private var pending: [Pending] = []
    /// Replies sent to a node and not read from its socket yet.
    private var outstanding: [ClusterNode: Int] = [:]
    /// Replies read ahead of their turn (to reach a redirected command's reply behind them).
    private var stash: [ClusterNode: [RedisReply]] = [:]
    /// Masters written to since the last `WAIT`, and the masters that `WAIT` went to (a `WAIT`
    /// repeated without writes between asks the same masters again).
    private var written: Set<ClusterNode> = []
    private var waited: [ClusterNode] = []
    var refreshWanted = false
    private var connected = false
    /// Shard channels this connection asked to leave, whose `sunsubscribe` is expected.
    var unsubscribing: [String: Int] = [:]

    init(config: RedisClusterConfig, endpoint: RedisEndpoint, timeoutMillis: Int) {
        (self.config, self.endpoint, self.timeoutMillis) = (config, endpoint, timeoutMillis)
    }

    var isConnected: Bool { connected }

    /// Reads the map and connects to every master in it: a master that cannot be reached (dead,
    /// its replica not promoted yet) fails the connection, and its owner tries again after its
    /// backoff rather than finding out command by command.
    func connect() throws(RedisError) {
        close()
        map = try readMap()
        try closing { () throws(RedisError) in
            for node in masters { _ = try connection(node) }
        }
        connected = true
    }

    func close() {
        for connection in nodes.values { connection.close() }
        nodes = [:]
        pending = []
        outstanding = [:]
        stash = [:]
        written = []
        waited = []
        unsubscribing = [:]
        connected = false
    }

    // MARK: commands

    func send(_ commands: [[[UInt8]]]) throws(RedisError) {
        try closing { () throws(RedisError) in
            guard connected else { throw RedisError("not connected to the Redis Cluster") }
            if refreshWanted && pending.isEmpty { try refresh() }
            var batches: [ClusterNode: [[[UInt8]]]] = [:]
            var order: [ClusterNode] = []
            for args in commands {
                let entry = try target(args)
                for node in entry.targets {
                    if batches[node] == nil { order.append(node) }
                    batches[node, default: []].append(args)
                }
                pending.append(entry)
            }
            for node in order {
                let batch = batches[node]!
                try connection(node).send(batch)
                outstanding[node, default: 0] += batch.count
            }
        }
    }

    func receive(count: Int) throws(RedisError) -> [RedisReply] {
        try closing { () throws(RedisError) -> [RedisReply] in
            guard pending.count >= count else { throw RedisError("asked for \(count) Redis replies, \(pending.count) awaited") }
            let entries = Array(pending.prefix(count))
            pending.removeFirst(count)
            var replies: [RedisReply] = []
            replies.reserveCapacity(count)
            for entry in entries {
                var answers: [RedisReply] = []
                for node in entry.targets { answers.append(try next(from: node)) }
                let reply = Self.merge(answers, entry.merge)
                if entry.merge == .minimum, case .error = reply { refreshWanted = true }
                replies.append(reply)
            }
            // Redirects are followed once the batch is read, so their replies are not mistaken
            // for the ones still on the way.
            for i in replies.indices {
                guard case let .error(e) = replies[i], var route = entries[i].route else { continue }
                replies[i] = try follow(entries[i].args, error: e, route: &route)
            }
            if refreshWanted && pending.isEmpty { try refresh() }
            return replies
        }
    }

    private func target(_ args: [[UInt8]]) throws(RedisError) -> Pending {
        guard let first = masters.first else { throw RedisError("the Redis Cluster map names no master") }
        let name = String(decoding: args.first ?? [], as: UTF8.self).uppercased()
        var entry = Pending(args: args, targets: [first], route: nil, merge: .first)
        switch name {
        case "SCRIPT":
            entry.targets = masters
        case "WAIT":
            if !written.isEmpty { waited = Array(written) }
            waited = waited.filter { masters.contains($0) }
            entry.targets = waited.isEmpty ? masters : waited
            entry.merge = .minimum
            written = []
        default:
            guard let key = Self.key(of: name, args) else { return entry }
            var route = ClusterRoute(slot: ClusterSlot.of(key))
            guard case let .send(node, _) = route.first(map) else {
                refreshWanted = true
                throw RedisError("no Redis Cluster master serves slot \(route.slot) in the map read last")
            }
            entry.targets = [node]
            entry.route = route
            written.insert(node)
        }
        return entry
    }

    /// The key that routes a command (nil: any master will do).
    static func key(of name: String, _ args: [[UInt8]]) -> [UInt8]? {
        switch name {
        case "EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL", "FCALL_RO":
            guard args.count > 3, let n = Int(String(decoding: args[2], as: UTF8.self)), n > 0 else { return nil }
            return args[3]
        case "PING", "INFO", "ROLE", "TIME", "ECHO", "CLUSTER", "AUTH", "SELECT", "ASKING", "CLIENT", "CONFIG",
             "DBSIZE", "COMMAND", "MEMORY", "FUNCTION", "LASTSAVE":
            return nil
        default:
            return args.count > 1 ? args[1] : nil
        }
    }

    private static func merge(_ answers: [RedisReply], _ merge: Merge) -> RedisReply {
        if let error = answers.first(where: { if case .error = $0 { return true } else { return false } }) { return error }
        switch merge {
        case .first: return answers.first ?? .null
        case .minimum: return .integer(answers.compactMap(\.integer).min() ?? 0)
        }
    }

    private func next(from node: ClusterNode) throws(RedisError) -> RedisReply {
        if let early = stash[node], !early.isEmpty {
            stash[node] = Array(early.dropFirst())
            return early[0]
        }
        let reply = try connection(node).receive(count: 1)[0]
        outstanding[node, default: 1] -= 1
        return reply
    }

    /// Follows `MOVED`, `ASK`, `TRYAGAIN` and `CLUSTERDOWN` until the command has an answer;
    /// throws when the route gives up (the cluster keeps moving the slot, or stays down).
    private func follow(_ args: [[UInt8]], error first: String, route: inout ClusterRoute) throws(RedisError) -> RedisReply {
        var error = first
        while let next = route.after(error: error, map: &map) {
            if route.refreshMap { refreshWanted = true }
            let reply: RedisReply
            let counters = RedisClusterCounters.shared
            switch next {
            case let .fail(reason):
                throw RedisError("Redis Cluster: \(reason)")
            case let .retry(node, millis):
                counters.retried.add(1, ordering: .relaxed)
                usleep(UInt32(millis) * 1_000)
                reply = try direct(args, to: node, asking: false)
            case let .send(node, asking):
                if asking { counters.asked.add(1, ordering: .relaxed) } else { counters.moved.add(1, ordering: .relaxed) }
                reply = try direct(args, to: node, asking: asking)
            }
            guard case let .error(e) = reply else { return reply }
            error = e
        }
        return .error(error)
    }

    private func direct(_ args: [[UInt8]], to node: ClusterNode, asking: Bool) throws(RedisError) -> RedisReply {
        let connection = try connection(node)
        if let waiting = outstanding[node], waiting > 0 {
            stash[node, default: []] += try connection.receive(count: waiting)
            outstanding[node] = 0
        }
        written.insert(node)
        if asking { return try connection.pipeline([[Array("ASKING".utf8)], args])[1] }
        return try connection.pipeline([args])[0]
    }

    // MARK: nodes and the map

    func connection(_ node: ClusterNode) throws(RedisError) -> RedisConnection {
        if let open = nodes[node], open.isConnected { return open }
        var endpoint = self.endpoint
        (endpoint.host, endpoint.port, endpoint.db) = (node.host, Int32(node.port), 0)
        let connection = RedisConnection(endpoint: endpoint, timeoutMillis: timeoutMillis)
        try connection.connect()
        nodes[node] = connection
        return connection
    }

    private func refresh() throws(RedisError) {
        map = try readMap()
        refreshWanted = false
        let current = Set(masters)
        for (node, connection) in nodes where !current.contains(node) && (outstanding[node] ?? 0) == 0 {
            connection.close()
            nodes[node] = nil
        }
    }

    /// The slot map as the first node that answers sees it: the seeds and every node of the last
    /// map are asked, and a map that leaves slots uncovered is taken only when no node has a whole one.
    private func readMap() throws(RedisError) -> ClusterSlotMap {
        var candidates: [ClusterNode] = []
        for node in map.ranges.flatMap({ [$0.master] + $0.replicas }) + config.seeds where !candidates.contains(node) {
            candidates.append(node)
        }
        var best: ClusterSlotMap?
        var failures: [String] = []
        for node in candidates {
            var endpoint = self.endpoint
            (endpoint.host, endpoint.port, endpoint.db) = (node.host, Int32(node.port), 0)
            let connection = RedisConnection(endpoint: endpoint, timeoutMillis: min(timeoutMillis, 1_000))
            do throws(RedisError) {
                try connection.connect()
                defer { connection.close() }
                let reply = try connection.command(["CLUSTER", "SLOTS"])
                guard let read = Self.parseSlots(reply, asked: node) else {
                    failures.append("\(node): \(reply)")
                    continue
                }
                RedisClusterCounters.shared.mapReads.add(1, ordering: .relaxed)
                if read.uncovered == 0 { return read }
                failures.append("\(node): \(read.uncovered) slots uncovered")
                if best == nil || read.uncovered < best!.uncovered { best = read }
            } catch {
                failures.append("\(node): \(error)")
            }
        }
        if let best, best.uncovered < ClusterSlot.count { return best }
        throw RedisError("no Redis Cluster node gave a slot map (\(failures.joined(separator: "; ")))")
    }

    /// `CLUSTER SLOTS`: `[[start, end, [host, port, id], replicas…], …]`; an empty host is the
    /// address asked.
    static func parseSlots(_ reply: RedisReply, asked: ClusterNode) -> ClusterSlotMap? {
        guard case let .array(items) = reply else { return nil }
        var ranges: [ClusterSlotMap.Range] = []
        for item in items {
            guard case let .array(fields) = item, fields.count >= 3, let low = fields[0].integer, let high = fields[1].integer,
                  low <= high else { return nil }
            let members: [ClusterNode] = fields[2...].compactMap { field in
                guard case let .array(parts) = field, parts.count >= 2, let port = parts[1].integer else { return nil }
                let host = parts[0].text ?? ""
                return ClusterNode(host: host.isEmpty || host == "?" ? asked.host : host, port: Int(port))
            }
            guard let master = members.first else { return nil }
            ranges.append(.init(slots: Int(low)...Int(high), master: master, replicas: Array(members.dropFirst())))
        }
        return ClusterSlotMap(ranges)
    }

    func closing<T>(_ body: () throws(RedisError) -> T) throws(RedisError) -> T {
        do throws(RedisError) {
            return try body()
        } catch {
            close()
            throw error
        }
    }
}

/// What this process's Redis Cluster connections did, for `/metrics`: redirects followed by
/// kind, slot maps read, shard channels Redis dropped under a subscriber (slot moved).
public final class RedisClusterCounters: Sendable {
    public static let shared = RedisClusterCounters()
    let moved = Atomic<Int>(0)
    let asked = Atomic<Int>(0)
    let retried = Atomic<Int>(0)
    let mapReads = Atomic<Int>(0)
    let shardChannelsDropped = Atomic<Int>(0)

    public var redirects: [(kind: String, count: Int)] {
        [("moved", moved.load(ordering: .relaxed)), ("ask", asked.load(ordering: .relaxed)),
         ("tryagain", retried.load(ordering: .relaxed))]
    }
    public var mapsRead: Int { mapReads.load(ordering: .relaxed) }
    public var shardChannelLosses: Int { shardChannelsDropped.load(ordering: .relaxed) }
}
