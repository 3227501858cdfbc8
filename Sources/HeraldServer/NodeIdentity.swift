import HeraldCore
import HeraldRedis
import HeraldRuntime

/// Two nodes must not share a `--node-id`: they would share one registry entry, and the admin
/// page, presence and lifecycle leases would mistake one for the other. At start-up a node
/// looks for a heartbeat under its id (`NodeRegistry`): one that is still being renewed (it
/// changes within two heartbeat periods) belongs to a running node, and this one refuses to
/// start. A heartbeat left by a node that died is not renewed, expires within
/// `AdminOverview.lostAfterMillis`, and does not stop a restart under the same id.
enum NodeIdentity {
    /// Why this node may not start under its id, or nil. Redis being unreachable is not a
    /// reason: the node starts and rides the outage out as usual.
    static func conflict(config: HeraldConfig, locator: RedisLocator, stop: StopFlag) -> String? {
        guard let redis = try? locator.connect() else { return nil }
        defer { redis.close() }
        let key = config.nodeKey(config.nodeID)
        guard let first = try? redis.command(["GET", key]).bytes else { return nil }
        stop.sleep(millis: 2 * NodeRegistry.intervalMillis + 200)
        guard let second = try? redis.command(["GET", key]).bytes, second != first else { return nil }
        let instance: String
        if case let .object(fields)? = try? JSON.parse(second), case let .string(s)? = fields.first(where: { $0.0 == "instance" })?.1 {
            instance = s
        } else {
            instance = "?"
        }
        return "another node is running with --node-id \(config.nodeID) (its heartbeat in \(key) is being renewed, instance \(instance)); give each node its own --node-id"
    }
}
