import HeraldAMQP
import HeraldCore
import HeraldRedis
import HeraldRuntime
import Logging

/// One connection of a worker thread to RabbitMQ or Redis, kept up: it connects on demand,
/// waits a capped exponential backoff with jitter between attempts, and owns the health flag,
/// the reconnect metric and the log lines of that connection. Every dependency connection in
/// Herald goes through one of these.
///
/// - Important: not thread-safe; owned by one worker thread.
final class Reconnecting<Connection: AnyObject> {
    /// Says what failed in log lines: "RabbitMQ (sequencer)".
    let name: String
    private let open: () throws -> Connection
    private let discard: (Connection) -> Void
    private let healthy: (Bool) -> Void
    private let reconnects: Counter
    private let logger: Logger
    private let stop: StopFlag
    private var backoff: Backoff
    private var everConnected = false
    /// Monotonic ms before which no attempt is made.
    private var nextAttempt: UInt64 = 0
    private(set) var current: Connection?
    /// Counts the connections made: tells one connection from the next even at the same address.
    private(set) var connectionNumber = 0
    /// Runs after a connection that follows a lost one (not after the first).
    var onReconnect: (Connection) -> Void = { _ in }
    /// Names the node a connection went to, for the log (set when there are several).
    var describe: ((Connection) -> String)?
    /// True when a connection that still works is to the wrong node (the Redis master moved):
    /// it is closed and a new one made at once, without backoff.
    var isStale: ((Connection) -> Bool)?
    /// True when the next attempt should not wait out the backoff: the dependency has moved
    /// since the last attempt failed (the sentinels named a new master).
    var retryNow: (() -> Bool)?

    /// - Parameters:
    ///   - open: connects and sets the connection up; throws when the dependency is unreachable.
    ///   - discard: closes (or abandons) a connection that failed or is no longer wanted.
    ///   - healthy: records whether the dependency is reachable (for `/readyz`).
    ///   - backoff: the waits between attempts (100 ms doubling up to 5 s unless given).
    init(_ name: String, logger: Logger, stop: StopFlag, reconnects: Counter, healthy: @escaping (Bool) -> Void = { _ in },
         backoff: Backoff = Backoff(), open: @escaping () throws -> Connection, discard: @escaping (Connection) -> Void) {
        self.backoff = backoff
        self.name = name
        self.logger = logger
        self.stop = stop
        self.reconnects = reconnects
        self.healthy = healthy
        self.open = open
        self.discard = discard
    }

    /// The open connection, or a new one. While the dependency is down: with `wait` it sleeps
    /// until the next attempt is due (waking when the thread stops) and tries once; without
    /// `wait` it returns nil at once until then.
    func get(wait: Bool = true) -> Connection? {
        if let current {
            guard let isStale, isStale(current) else { return current }
            self.current = nil
            discard(current)
            nextAttempt = 0
            logger.warning("\(name): its node is no longer the one to use; reconnecting",
                           metadata: describe.map { ["node": "\($0(current))"] } ?? [:])
        }
        var now = monotonicMillis()
        if now < nextAttempt && retryNow?() != true {
            guard wait else { return nil }
            // In slices, so that a move of the dependency ends the wait at once.
            while now < nextAttempt && !stop.isSet && retryNow?() != true {
                stop.sleep(millis: Int(min(nextAttempt - now, 100)))
                now = monotonicMillis()
            }
            if stop.isSet { return nil }
        }
        do {
            let connection = try open()
            current = connection
            connectionNumber += 1
            backoff.reset()
            healthy(true)
            let node: Logger.Metadata = describe.map { ["node": "\($0(connection))"] } ?? [:]
            if everConnected {
                reconnects.add()
                logger.info("\(name) is back", metadata: node)
                onReconnect(connection)
            } else if !node.isEmpty {
                logger.info("\(name) connected", metadata: node)
            }
            everConnected = true
            return connection
        } catch {
            healthy(false)
            let retry = backoff.next(jitter: Double.random(in: 0..<1))
            nextAttempt = monotonicMillis() + UInt64(retry)
            logger.error("cannot reach \(name); retrying", metadata: ["error": "\(error)", "retry_ms": "\(retry)"])
            return nil
        }
    }

    /// The connection failed: it is discarded, and the next `get` reconnects after the backoff.
    func drop(_ error: any Error, _ consequence: String) {
        guard let connection = current else { return }
        current = nil
        discard(connection)
        healthy(false)
        let retry = backoff.next(jitter: Double.random(in: 0..<1))
        nextAttempt = monotonicMillis() + UInt64(retry)
        logger.error("lost \(name); \(consequence)", metadata: ["error": "\(error)", "retry_ms": "\(retry)"])
    }

    /// Gives the connection up on purpose (not a failure): it is closed, and the next `get`
    /// connects again once `pauseMillis` have passed.
    func release(pauseMillis: UInt64, _ why: String) {
        guard let connection = current else { return }
        current = nil
        discard(connection)
        nextAttempt = monotonicMillis() + pauseMillis
        logger.info("\(name): \(why)", metadata: ["pause_ms": "\(pauseMillis)"])
    }

    /// Closes the connection for good (shutdown).
    func close(_ close: (Connection) -> Void) {
        if let current { close(current) }
        current = nil
    }
}


extension HeraldConfig {
    /// `--redis-cluster`'s seeds (validated when the options were read), nil without a cluster.
    var redisClusterConfig: RedisClusterConfig? {
        redisCluster ? RedisClusterConfig(seeds: redisClusterSeeds.compactMap { ClusterNode.parse($0) }) : nil
    }
}

extension Worker {
    /// A Redis connection of this worker: to `--redis-url`, to the masters of `--redis-cluster`,
    /// or to the master the sentinels name (and again whenever they name another one, or it
    /// answers READONLY).
    func makeRedisLink(_ name: String, healthy: @escaping (Bool) -> Void = { _ in }) -> Reconnecting<RedisConnection> {
        let locator = RedisLocator(data: redisEndpoint, sentinel: redisSentinel, cluster: config.redisClusterConfig)
        var generation = 0
        // A Redis Cluster promotes a dead master's replica by itself, with nobody to ask when:
        // its connections try again at least once a second, so the new master is used within
        // about a second of its promotion.
        let backoff = config.redisCluster ? Backoff(initialMillis: 100, capMillis: 1_000) : Backoff()
        let link = Reconnecting(name, logger: logger, stop: stop, reconnects: metrics.redisReconnects, healthy: healthy,
                                backoff: backoff, open: { [health] in
                                    generation = health.redisMasterGeneration.load(ordering: .acquiring)
                                    return try locator.connect()
                                },
                                discard: { $0.close() })
        if redisSentinel != nil {
            link.describe = { "\($0.endpoint.host):\($0.endpoint.port)" }
            link.isStale = { [health] _ in health.redisMasterGeneration.load(ordering: .acquiring) != generation }
            // A master that could not be reached is not waited for once the sentinels name another.
            link.retryNow = { [health] in health.redisMasterGeneration.load(ordering: .acquiring) != generation }
        }
        return link
    }

    /// An AMQP connection of this worker, set up by `setUp` (declarations, consumers) each time
    /// it connects, on the first RabbitMQ node that answers; after a loss it begins with another
    /// node. A node where set-up fails counts as unreachable.
    func makeAMQPLink(_ name: String, healthy: @escaping (Bool) -> Void,
                  setUp: @escaping (AMQPConnection) throws(AMQPError) -> Void) -> Reconnecting<AMQPConnection> {
        let cluster = AMQPCluster(endpoints: amqpEndpoints)
        let link = Reconnecting(name, logger: logger, stop: stop, reconnects: metrics.amqpReconnects, healthy: healthy,
                                open: { [config] in
                                    try cluster.connect { connection throws(AMQPError) in
                                        try Topology.declare(connection, config)
                                        try setUp(connection)
                                    }
                                },
                                discard: { connection in
                                    cluster.lost()
                                    connection.abandon()
                                })
        if amqpEndpoints.count > 1 {
            link.describe = { "\($0.endpoint.host):\($0.endpoint.port)" }
        }
        return link
    }
}
