import HeraldCore
import HeraldRedis

/// The Redis side of lifecycle events (`LifecycleLedger`): a lease per node instance, each
/// instance's connections, and per channel the set of instances that occupy it.
extension Scripts {
    /// Renews this instance's lifecycle lease and reaps every instance whose lease ran out, at
    /// least once: a lost instance leaves the occupancy set of each channel it held (the
    /// channels it was the last in are kept with their new versions), and its connections stay
    /// in Redis under a claim until the survivor that emits its events has them confirmed
    /// (`lifecycleRelease`). A claim whose claimer's own lease ran out (it died before its
    /// confirms) is taken over, so the events are emitted again rather than lost.
    /// KEYS: leases zset, occupancy version counter, reaping hash. ARGV: instance, lease ms,
    /// connections-hash prefix, held-set prefix, occupancy-set prefix, vacated-list prefix.
    /// Returns {lapsed (1: the lease had run out or never existed), then per instance this one
    /// claimed: instance, {client, entry, …}, {channel, version, …}}.
    static let lifecycleHeartbeat = RedisScript(source: Lua.lifecycleHeartbeat)

    /// What a claimed instance left behind, once its events are confirmed: the claim, its
    /// connections and its vacated channels. KEYS: reaping hash, connections hash, vacated list.
    /// ARGV: lost instance.
    static func lifecycleRelease(_ config: HeraldConfig, instance: String) -> [[[UInt8]]] {
        [["HDEL", config.lifecycleReapingKey, instance],
         ["DEL", config.lifecycleClientsPrefix + instance, config.lifecycleVacatedPrefix + instance]].map { $0.map { Array($0.utf8) } }
    }

    /// Adds this instance to (ARGV[3] = 1) or removes it from (0) a channel's occupancy set, and
    /// says whether that made the set go from empty to one or from one to empty: the new
    /// version then, else 0. KEYS: occupancy set, the instance's held set, version counter.
    /// ARGV: instance, channel, 1|0.
    static let occupancy = RedisScript(source: Lua.occupancy)

    static func lifecycleHeartbeatCall(_ config: HeraldConfig) -> (keys: [[UInt8]], args: [[UInt8]]) {
        ([config.lifecycleLeasesKey, config.occupancyVersionKey, config.lifecycleReapingKey].map { Array($0.utf8) },
         [config.instance, String(config.lifecycleLeaseMillis), config.lifecycleClientsPrefix, config.lifecycleHeldPrefix,
          config.occupancyPrefix, config.lifecycleVacatedPrefix].map { Array($0.utf8) })
    }

    static func occupancyCall(_ config: HeraldConfig, channel: String, occupy: Bool) -> (keys: [[UInt8]], args: [[UInt8]]) {
        ([config.occupancyPrefix + channel, config.lifecycleHeldPrefix + config.instance, config.occupancyVersionKey].map { Array($0.utf8) },
         [config.instance, channel, occupy ? "1" : "0"].map { Array($0.utf8) })
    }

    /// The heartbeat's answer: whether this instance's lease had lapsed, and the instances it
    /// reaped (entries that do not parse are skipped: a survivor never crashes on what Redis holds).
    static func lifecycleReaps(_ reply: RedisReply) -> (lapsed: Bool, reaped: [LifecycleLedger.Reaped])? {
        guard case let .array(items) = reply, let lapsed = items.first?.integer, items.count % 3 == 1 else { return nil }
        var reaped: [LifecycleLedger.Reaped] = []
        for i in stride(from: 1, to: items.count, by: 3) {
            guard let instance = items[i].text, case let .array(hash) = items[i + 1], case let .array(vacated) = items[i + 2] else { return nil }
            var lost = LifecycleLedger.Reaped(instance: instance, clients: [], vacated: [])
            for j in stride(from: 0, to: hash.count - 1, by: 2) {
                guard let client = hash[j].text, let bytes = hash[j + 1].bytes, let entry = LifecycleClient.decode(bytes) else { continue }
                lost.clients.append((client, entry))
            }
            for j in stride(from: 0, to: vacated.count - 1, by: 2) {
                guard let channel = vacated[j].text, let version = vacated[j + 1].text.flatMap({ UInt64($0) }) else { continue }
                lost.vacated.append((channel, version))
            }
            reaped.append(lost)
        }
        return (lapsed == 1, reaped)
    }
}
