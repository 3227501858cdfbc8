/// Redis behind Sentinel: the sentinels to ask and the name of the master they watch.
public struct RedisSentinelConfig: Sendable, Equatable {
    public struct Address: Sendable, Equatable {
        public let host: String
        public let port: Int32
        public init(host: String, port: Int32) { (self.host, self.port) = (host, port) }

        /// `HOST:PORT` (or `[v6]:PORT`).
        public init(_ text: String) throws(RedisError) {
            guard let colon = text.lastIndex(of: ":"), let port = Int32(text[text.index(after: colon)...]), port > 0 else {
                throw RedisError("a sentinel is HOST:PORT (got \(text))")
            }
            var host = String(text[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty else { throw RedisError("a sentinel is HOST:PORT (got \(text))") }
            self.init(host: host, port: port)
        }
    }

    public let sentinels: [Address]
    public let masterName: String
    /// For sentinels started with `requirepass` (the data nodes' password is the Redis URL's).
    public let password: String?

    public init(sentinels: [Address], masterName: String, password: String? = nil) {
        (self.sentinels, self.masterName, self.password) = (sentinels, masterName, password)
    }
}

/// Finds the Redis to write to: the one endpoint of `--redis-url`, the cluster of
/// `--redis-cluster`, or the master the sentinels name, confirmed with `ROLE` (a sentinel may still name a master that has just been demoted).
///
/// - Important: not thread-safe; each connection owner has its own.
public final class RedisLocator {
    public let data: RedisEndpoint
    public let sentinel: RedisSentinelConfig?
    /// A Redis Cluster instead: the connection routes each command to its slot's master.
    public let cluster: RedisClusterConfig?
    private var nextSentinel = 0

    public init(data: RedisEndpoint, sentinel: RedisSentinelConfig?, cluster: RedisClusterConfig? = nil) {
        (self.data, self.sentinel, self.cluster) = (data, sentinel, cluster)
    }

    /// A connection to the master (or to the cluster), or an error naming what every sentinel said.
    public func connect(timeoutMillis: Int = 2_000) throws(RedisError) -> RedisConnection {
        if let cluster {
            let connection = RedisConnection(cluster: cluster, endpoint: data, timeoutMillis: timeoutMillis)
            try connection.connect()
            return connection
        }
        guard sentinel != nil else {
            let connection = RedisConnection(endpoint: data, timeoutMillis: timeoutMillis)
            try connection.connect()
            return connection
        }
        let master = try masterAddress()
        var endpoint = data
        endpoint.host = master.host
        endpoint.port = master.port
        let connection = RedisConnection(endpoint: endpoint, timeoutMillis: timeoutMillis)
        try connection.connect()
        let role = try connection.command(["ROLE"])
        guard case let .array(items) = role, items.first?.text == "master" else {
            connection.close()
            throw RedisError("\(master.host):\(master.port), named master by the sentinels, is not a master yet (ROLE: \(role))")
        }
        return connection
    }

    /// The master's address as the first sentinel that answers names it.
    public func masterAddress() throws(RedisError) -> RedisSentinelConfig.Address {
        guard let sentinel else { return .init(host: data.host, port: data.port) }
        var failures: [String] = []
        for attempt in 0..<sentinel.sentinels.count {
            let index = (nextSentinel + attempt) % sentinel.sentinels.count
            let address = sentinel.sentinels[index]
            do throws(RedisError) {
                let master = try Self.ask(address, sentinel, timeoutMillis: 1_000)
                nextSentinel = index
                return master
            } catch {
                failures.append("\(address.host):\(address.port): \(error)")
            }
        }
        nextSentinel = (nextSentinel + 1) % sentinel.sentinels.count
        throw RedisError("no sentinel named a master for \(sentinel.masterName) (\(failures.joined(separator: "; ")))")
    }

    static func ask(_ address: RedisSentinelConfig.Address, _ config: RedisSentinelConfig,
                    timeoutMillis: Int) throws(RedisError) -> RedisSentinelConfig.Address {
        var endpoint = try RedisEndpoint(url: "redis://127.0.0.1:6379/0")
        endpoint.host = address.host
        endpoint.port = address.port
        endpoint.password = config.password
        let connection = RedisConnection(endpoint: endpoint, timeoutMillis: timeoutMillis)
        try connection.connect()
        defer { connection.close() }
        let reply = try connection.command(["SENTINEL", "get-master-addr-by-name", config.masterName])
        guard case let .array(items) = reply, items.count == 2, let host = items[0].text,
              let port = items[1].integer, let port32 = Int32(exactly: port) else {
            if case let .error(e) = reply { throw RedisError(e) }
            throw RedisError("does not know a master named \(config.masterName)")
        }
        return .init(host: host, port: port32)
    }
}
