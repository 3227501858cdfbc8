import Testing
@testable import HeraldCore

/// Sharing sequencing partitions between nodes (`--partitions`).
@Suite struct PartitionBalanceTests {
    @Test func aNodeHoldsAtMostItsShareAndGivesUpItsHighestFirst() {
        #expect(PartitionBalance.share(partitions: 8, nodes: 3) == 3)
        #expect(PartitionBalance.share(partitions: 8, nodes: 0) == 8)
        #expect(PartitionBalance.toYield(held: [0, 1, 2, 3], partitions: 4, nodes: 1) == nil)
        #expect(PartitionBalance.toYield(held: [0, 1, 2, 3], partitions: 4, nodes: 2) == 3)
        #expect(PartitionBalance.toYield(held: [0, 1, 2], partitions: 4, nodes: 2) == 2)
        #expect(PartitionBalance.toYield(held: [0, 1], partitions: 4, nodes: 2) == nil)
        // 8 over 3 nodes: one holding 4 gives one up; 3 each is fine (3 + 3 + 2).
        #expect(PartitionBalance.toYield(held: [1, 4, 6, 7], partitions: 8, nodes: 3) == 7)
        #expect(PartitionBalance.toYield(held: [1, 4, 6], partitions: 8, nodes: 3) == nil)
    }

    @Test func givingUpRepeatedlyConvergesToTheShareFromAnyStart() {
        // Simulated: each round the over-share node gives one up, the least-loaded takes it.
        for nodes in 1...5 {
            var held: [Set<Int>] = Array(repeating: [], count: nodes)
            held[0] = Set(0..<8)
            for _ in 0..<20 {
                for i in 0..<nodes {
                    guard let p = PartitionBalance.toYield(held: held[i], partitions: 8, nodes: nodes) else { continue }
                    held[i].remove(p)
                    let taker = (0..<nodes).filter { $0 != i }.min { held[$0].count < held[$1].count }!
                    held[taker].insert(p)
                }
            }
            #expect(held.allSatisfy { $0.count <= PartitionBalance.share(partitions: 8, nodes: nodes) }, "\(nodes) nodes: \(held)")
            #expect(held.reduce(0) { $0 + $1.count } == 8)
        }
    }
}
