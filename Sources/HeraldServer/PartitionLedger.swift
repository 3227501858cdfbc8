import HeraldCore
import HeraldRuntime
import Synchronization

/// The partitions this node's sequencers hold (they are the active consumer of their queue),
/// and when one was last given up: the node gives up at most one partition per `pauseMillis`, so
/// the cluster settles without handing a partition back and forth. Any sequencer thread.
final class PartitionLedger: Sendable {
    private struct State {
        var held: Set<Int> = []
        var lastYieldMillis: UInt64 = 0
    }
    private let state = Mutex(State())
    let partitions: Int
    /// Live nodes, as the node registry last counted them.
    let liveNodes = Atomic<Int>(1)
    let metrics: Metrics
    static let pauseMillis: UInt64 = 5_000

    init(partitions: Int, metrics: Metrics) {
        self.partitions = partitions
        self.metrics = metrics
    }

    var held: Int { state.withLock { $0.held.count } }

    /// Records whether `partition` is active here; true when it should be given up now.
    func update(_ partition: Int, active: Bool, nowMillis: UInt64) -> Bool {
        let nodes = liveNodes.load(ordering: .relaxed)
        return state.withLock { s in
            if active { s.held.insert(partition) } else { s.held.remove(partition) }
            defer { metrics.partitionsHeld.store(s.held.count, ordering: .relaxed) }
            guard active, nowMillis >= s.lastYieldMillis + Self.pauseMillis,
                  PartitionBalance.toYield(held: s.held, partitions: partitions, nodes: nodes) == partition else { return false }
            s.held.remove(partition)
            s.lastYieldMillis = nowMillis
            metrics.partitionHandoffs.add()
            return true
        }
    }
}
