import HeraldRedis

extension Metrics {
    /// `/metrics` of the Redis Cluster connections (all zero without `--redis-cluster`).
    static func renderRedisCluster(into out: inout String) {
        let counters = RedisClusterCounters.shared
        out += "# HELP herald_redis_cluster_redirects_total Redis Cluster redirects followed, by kind (moved, ask, tryagain: TRYAGAIN or CLUSTERDOWN retried).\n"
        out += "# TYPE herald_redis_cluster_redirects_total counter\n"
        for (kind, count) in counters.redirects { out += "herald_redis_cluster_redirects_total{kind=\"\(kind)\"} \(count)\n" }
        out += "# HELP herald_redis_cluster_map_reads_total Redis Cluster slot maps read (CLUSTER SLOTS), at connecting and after a MOVED.\n"
        out += "# TYPE herald_redis_cluster_map_reads_total counter\nherald_redis_cluster_map_reads_total \(counters.mapsRead)\n"
        out += "# HELP herald_redis_cluster_shard_channel_losses_total Shard channels Redis dropped under this node's live subscription (their slot moved, or their master was demoted); each made the node subscribe again and catch up.\n"
        out += "# TYPE herald_redis_cluster_shard_channel_losses_total counter\nherald_redis_cluster_shard_channel_losses_total \(counters.shardChannelLosses)\n"
    }
}
