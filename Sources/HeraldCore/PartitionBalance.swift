/// How a node decides to give up a sequencing partition (`--partitions`): RabbitMQ makes one
/// consumer of each partition's queue active, the first that came; a node that holds more than
/// its share (N partitions over K live nodes: ⌈N/K⌉) gives one up, so the next node waiting on
/// that queue takes it over. Pure: the caller passes what it holds and how many nodes live.
public enum PartitionBalance {
    /// The most partitions one node should hold: ⌈partitions / nodes⌉.
    public static func share(partitions: Int, nodes: Int) -> Int {
        let k = max(1, nodes)
        return (partitions + k - 1) / k
    }

    /// The partition to give up now, or nil: when this node holds more than its share, the
    /// highest-numbered it holds (so every node gives up the same ones first, and the low ones
    /// stay put).
    public static func toYield(held: Set<Int>, partitions: Int, nodes: Int) -> Int? {
        guard held.count > share(partitions: partitions, nodes: nodes) else { return nil }
        return held.max()
    }
}
