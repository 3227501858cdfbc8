import HeraldRedis
import HeraldRuntime
import Logging

/// With `--redis-sentinel`: asks the sentinels four times a second which Redis is the master,
/// and when they name another one, bumps `Health.redisMasterGeneration` so that every Redis
/// connection of this node moves to it before its next command. (A connection to a master that
/// died fails on its own and finds the new one too; this covers a demoted master that is still
/// up, which would otherwise answer until its first write is refused with READONLY.)
///
/// - Important: runs on its own thread (`herald-sentinel`), which is the only one that touches
///   its state (hence `@unchecked Sendable`).
final class SentinelWatcher: Worker, @unchecked Sendable {
    static let pollMillis = 250

    func run() {
        guard let sentinel = redisSentinel else { return }
        let locator = RedisLocator(data: redisEndpoint, sentinel: sentinel)
        var known: RedisSentinelConfig.Address?
        var unreachableSince: UInt64?
        while !stop.isSet {
            do throws(RedisError) {
                let master = try locator.masterAddress()
                if let previous = known, previous != master {
                    health.redisMasterGeneration.add(1, ordering: .releasing)
                    metrics.redisMasterSwitches.add()
                    logger.warning("the sentinels named a new Redis master; every Redis connection moves to it",
                                   metadata: ["master": "\(sentinel.masterName)", "from": "\(previous.host):\(previous.port)",
                                              "to": "\(master.host):\(master.port)"])
                }
                known = master
                unreachableSince = nil
            } catch {
                let now = monotonicMillis()
                if unreachableSince == nil {
                    unreachableSince = now
                    logger.error("no sentinel answers; Redis connections stay where they are", metadata: ["error": "\(error)"])
                }
            }
            stop.sleep(millis: Self.pollMillis)
        }
    }
}
