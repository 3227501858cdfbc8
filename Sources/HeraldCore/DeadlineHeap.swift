/// Deadlines set in any order (an RPC may ask for less than the server's timeout), expired
/// earliest first: a binary min-heap, O(log n) to add and to expire. A key removed before its
/// deadline leaves its entry behind; `expire` skips it (removal does not search).
public struct DeadlineHeap<Key: Hashable> {
    private var heap: [(deadline: UInt64, key: Key)] = []
    private var live: [Key: UInt64] = [:]

    public init() {}

    /// Keys waiting for their deadline.
    public var count: Int { live.count }
    /// The earliest deadline still waiting (entries of removed keys may make it earlier than
    /// any live one; waking for it early is harmless).
    public var next: UInt64? { heap.first?.deadline }

    public mutating func set(_ key: Key, deadline: UInt64) {
        live[key] = deadline
        heap.append((deadline, key))
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].deadline < heap[parent].deadline else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    @discardableResult
    public mutating func remove(_ key: Key) -> Bool {
        let was = live.removeValue(forKey: key) != nil
        if live.isEmpty { heap.removeAll(keepingCapacity: true) }
        return was
    }

    /// The keys whose deadline is at or before `now`, earliest first; they are removed.
    public mutating func expire(now: UInt64) -> [Key] {
        var due: [Key] = []
        while let top = heap.first, top.deadline <= now {
            popTop()
            if live[top.key] == top.deadline {
                live[top.key] = nil
                due.append(top.key)
            }
        }
        return due
    }

    private mutating func popTop() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var smallest = i
            if l < heap.count, heap[l].deadline < heap[smallest].deadline { smallest = l }
            if r < heap.count, heap[r].deadline < heap[smallest].deadline { smallest = r }
            if smallest == i { return }
            heap.swapAt(i, smallest)
            i = smallest
        }
    }
}
