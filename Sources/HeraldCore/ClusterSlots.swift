/// Redis Cluster's routing, without I/O (issue 35): which of the 16,384 hash slots a key is in,
/// which master serves a slot, and what to do with a `MOVED`, `ASK`, `TRYAGAIN` or `CLUSTERDOWN`
/// answer. The Redis client that follows these decisions lives with the connections.
public enum ClusterSlot {
    public static let count = 16_384

    /// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), as Redis Cluster uses it.
    public static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return crc
    }

    /// The part of `key` that is hashed: the bytes between its first `{` and the next `}` when
    /// there are some, else the whole key (so `{room:1}:history` and `{room:1}:meta` share a
    /// slot, and `a{}b` hashes whole).
    public static func hashedPart(_ key: [UInt8]) -> ArraySlice<UInt8> {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")),
              let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 else { return key[...] }
        return key[(open + 1)..<close]
    }

    public static func of(_ key: [UInt8]) -> Int { Int(crc16(hashedPart(key)) % UInt16(count)) }
    public static func of(_ key: String) -> Int { of(Array(key.utf8)) }
}

/// A Redis Cluster node's address.
public struct ClusterNode: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// `127.0.0.1:7001`, `[::1]:7001`, or `host:port@bus` as `CLUSTER NODES` writes it.
    public static func parse(_ text: some StringProtocol) -> ClusterNode? {
        let address = String(text.prefix { $0 != "@" })
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (1...65_535).contains(port) else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return ClusterNode(host: host, port: port)
    }
}

/// Which master serves each slot (from `CLUSTER SLOTS` or `CLUSTER SHARDS`), corrected slot by
/// slot by `MOVED` answers until the next full read.
public struct ClusterSlotMap: Equatable, Sendable {
    public struct Range: Equatable, Sendable {
        public var slots: ClosedRange<Int>
        public var master: ClusterNode
        public var replicas: [ClusterNode]
        public init(slots: ClosedRange<Int>, master: ClusterNode, replicas: [ClusterNode] = []) {
            self.slots = slots
            self.master = master
            self.replicas = replicas
        }
    }

    /// The master of each slot, by slot (nil: no node serves it).
    private var owners: [ClusterNode?]
    public private(set) var ranges: [Range]

    public init(_ ranges: [Range]) {
        self.ranges = ranges
        owners = Array(repeating: nil, count: ClusterSlot.count)
        for range in ranges where range.slots.lowerBound >= 0 && range.slots.upperBound < ClusterSlot.count {
            for slot in range.slots { owners[slot] = range.master }
        }
    }

    public func master(ofSlot slot: Int) -> ClusterNode? {
        owners.indices.contains(slot) ? owners[slot] : nil
    }

    public func master(of key: String) -> ClusterNode? { master(ofSlot: ClusterSlot.of(key)) }

    /// Every master, once, in the order of their first range.
    public var masters: [ClusterNode] {
        var seen = Set<ClusterNode>()
        return ranges.map(\.master).filter { seen.insert($0).inserted } + owners.compactMap { $0 }.filter { seen.insert($0).inserted }
    }

    /// Slots no master serves (a map read in the middle of a failover).
    public var uncovered: Int { owners.count { $0 == nil } }

    /// A `MOVED` answer: the slot is served by `node` from now on.
    public mutating func moved(slot: Int, to node: ClusterNode) {
        guard owners.indices.contains(slot) else { return }
        owners[slot] = node
    }
}

/// A Redis error that sends a command elsewhere or later.
public enum ClusterRedirect: Equatable, Sendable {
    /// `MOVED 3999 127.0.0.1:7002`: the slot lives there now (the map is out of date).
    case moved(slot: Int, node: ClusterNode)
    /// `ASK 3999 127.0.0.1:7002`: this once, during a slot migration, send `ASKING` then the
    /// command there; the map is unchanged.
    case ask(slot: Int, node: ClusterNode)
    /// `TRYAGAIN` (a multi-key command during a migration) or `CLUSTERDOWN` (no quorum, or a
    /// slot without a master during a failover): the same command again after a pause.
    case tryAgain

    /// The redirect an error message stands for, or nil for any other error.
    public static func parse(_ error: String) -> ClusterRedirect? {
        let parts = error.split(separator: " ")
        guard let kind = parts.first else { return nil }
        switch kind {
        case "MOVED", "ASK":
            guard parts.count == 3, let slot = Int(parts[1]), (0..<ClusterSlot.count).contains(slot),
                  let node = ClusterNode.parse(parts[2]) else { return nil }
            return kind == "MOVED" ? .moved(slot: slot, node: node) : .ask(slot: slot, node: node)
        case "TRYAGAIN", "CLUSTERDOWN":
            return .tryAgain
        default:
            return nil
        }
    }
}

/// One command's way through the cluster: where to send it first, and after each error what to
/// do next, with a bound on redirects so a cluster that keeps moving a slot fails the command
/// instead of looping.
public struct ClusterRoute: Equatable, Sendable {
    public enum Next: Equatable, Sendable {
        /// Send it to this node (after `ASKING` when `asking`).
        case send(to: ClusterNode, asking: Bool)
        /// Wait `millis`, then send it to this node again.
        case retry(to: ClusterNode, afterMillis: Int)
        /// Give up with this reason (the command's error is the caller's to report).
        case fail(String)
    }

    public static let maxRedirects = 5
    public static let retryMillis = 100

    public let slot: Int
    public private(set) var redirects = 0
    /// The map needs a full read (`CLUSTER SLOTS`) before the next command: a `MOVED` was seen.
    public private(set) var refreshMap = false
    private var last: ClusterNode?

    public init(slot: Int) { self.slot = slot }

    /// Where the command goes first, or `.fail` when no master serves its slot.
    public mutating func first(_ map: ClusterSlotMap) -> Next {
        guard let node = map.master(ofSlot: slot) else {
            refreshMap = true
            return .fail("no Redis Cluster master serves slot \(slot) (the map is being read again)")
        }
        last = node
        return .send(to: node, asking: false)
    }

    /// The command failed with `error`: where it goes next (nil: it is not a redirect, the
    /// error is the command's answer). A `MOVED` also corrects `map` for this slot.
    public mutating func after(error: String, map: inout ClusterSlotMap) -> Next? {
        guard let redirect = ClusterRedirect.parse(error) else { return nil }
        redirects += 1
        guard redirects <= Self.maxRedirects else {
            return .fail("slot \(slot) was redirected \(Self.maxRedirects) times (last: \(error)); the cluster is still moving it")
        }
        switch redirect {
        case let .moved(slot, node):
            map.moved(slot: slot, to: node)
            refreshMap = true
            last = node
            return .send(to: node, asking: false)
        case let .ask(_, node):
            return .send(to: node, asking: true)
        case .tryAgain:
            guard let node = last ?? map.master(ofSlot: slot) else { return .fail("no master for slot \(slot)") }
            return .retry(to: node, afterMillis: Self.retryMillis)
        }
    }
}
