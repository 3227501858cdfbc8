import Synchronization

/// The connection limits (`--max-connections`, `--max-connections-per-ip`), counted across
/// every WebSocket service thread of the node: an upgrade takes a place here before it
/// completes, and gives it back when its connection is destroyed.
///
/// Thread-safe: the service threads share one.
public final class Admission: Sendable {
    public let maxConnections: Int
    /// 0: no limit per address.
    public let maxPerAddress: Int
    private struct Counts {
        var total = 0
        var perAddress: [String: Int] = [:]
    }
    private let counts = Mutex(Counts())

    public init(maxConnections: Int, maxPerAddress: Int) {
        self.maxConnections = maxConnections
        self.maxPerAddress = maxPerAddress
    }

    /// Takes a place for a connection from `address`, or says which limit is full.
    func admit(_ address: String) -> WebSocketRefusal? {
        counts.withLock { c in
            if c.total >= maxConnections { return .serverFull }
            if maxPerAddress > 0, (c.perAddress[address] ?? 0) >= maxPerAddress { return .addressFull(address) }
            c.total += 1
            if maxPerAddress > 0 { c.perAddress[address, default: 0] += 1 }
            return nil
        }
    }

    /// Gives back a place `admit` took.
    func release(_ address: String) {
        counts.withLock { c in
            c.total -= 1
            if maxPerAddress > 0, let n = c.perAddress[address] { c.perAddress[address] = n > 1 ? n - 1 : nil }
        }
    }

    /// Connections holding a place, on every thread.
    public var count: Int { counts.withLock { $0.total } }
}
