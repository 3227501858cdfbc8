/// The RabbitMQ nodes one connection may use (`--amqp-url`, repeated): the nodes of a cluster,
/// tried in turn. Each owner starts at a different node, so a deployment's connections spread
/// over the cluster; after a loss it begins with the next node, so a dead node is not the
/// first one asked again.
///
/// - Important: not thread-safe; owned by the thread that owns the connections it makes.
public final class AMQPCluster {
    public let endpoints: [AMQPEndpoint]
    private var next: Int

    public init(endpoints: [AMQPEndpoint], start: Int = Int.random(in: 0..<1_000)) {
        precondition(!endpoints.isEmpty, "at least one AMQP endpoint")
        self.endpoints = endpoints
        next = start % endpoints.count
    }

    public convenience init(urls: [String]) throws(AMQPError) {
        guard !urls.isEmpty else { throw AMQPError("no AMQP URL") }
        var endpoints: [AMQPEndpoint] = []
        for url in urls { endpoints.append(try AMQPEndpoint(url: url)) }
        self.init(endpoints: endpoints)
    }

    /// The node the last connection went to (or the next to be tried).
    public var current: AMQPEndpoint { endpoints[next] }

    /// A connected `AMQPConnection` to the first node that answers, starting at the current
    /// one; `setUp` runs on it before it is returned (a node whose set-up fails counts as
    /// unreachable). Throws, naming every node's error, when none does.
    public func connect(heartbeatSeconds: Int32 = 10, timeoutMillis: Int = 3_000,
                        setUp: (AMQPConnection) throws(AMQPError) -> Void = { _ in }) throws(AMQPError) -> AMQPConnection {
        var failures: [String] = []
        for attempt in 0..<endpoints.count {
            let index = (next + attempt) % endpoints.count
            let connection = AMQPConnection(endpoint: endpoints[index], heartbeatSeconds: heartbeatSeconds)
            do {
                try connection.connect(timeoutMillis: timeoutMillis)
                try setUp(connection)
                next = index
                return connection
            } catch {
                connection.abandon()
                failures.append("\(endpoints[index].host):\(endpoints[index].port): \(error)")
            }
        }
        throw AMQPError(endpoints.count == 1 ? failures[0] : "no RabbitMQ node answered (\(failures.joined(separator: "; ")))")
    }

    /// The connection to the current node was lost: the next attempt begins with another node.
    public func lost() {
        next = (next + 1) % endpoints.count
    }
}
