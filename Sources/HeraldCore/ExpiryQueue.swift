/// Deadlines by id (token expiries by connection), earliest first.
///
/// A binary min-heap with lazy deletion: `deadlines` is the truth, and a heap entry whose
/// deadline no longer matches it (forgotten, or tracked again) is skipped when it surfaces.
/// The heap is rebuilt when stale entries outnumber live ones, so it stays O(live).
public struct ExpiryQueue: Sendable {
    private var deadlines: [UInt64: UInt64] = [:]
    private var heap: [(at: UInt64, id: UInt64)] = []

    public init() {}

    public var count: Int { deadlines.count }

    /// Sets (or replaces) the deadline of `id`.
    public mutating func track(_ id: UInt64, expiresAt at: UInt64) {
        deadlines[id] = at
        push((at, id))
        compactIfStale()
    }

    public mutating func forget(_ id: UInt64) {
        deadlines[id] = nil
        compactIfStale()
    }

    /// The earliest live deadline.
    public var next: UInt64? {
        mutating get {
            dropStaleTop()
            return heap.first?.at
        }
    }

    /// Removes and returns, earliest first, every id whose deadline is at or before `now`.
    public mutating func expired(nowSeconds now: UInt64) -> [UInt64] {
        var out: [UInt64] = []
        while true {
            dropStaleTop()
            guard let top = heap.first, top.at <= now else { break }
            popTop()
            deadlines[top.id] = nil
            out.append(top.id)
        }
        return out
    }

    private mutating func dropStaleTop() {
        while let top = heap.first, deadlines[top.id] != top.at { popTop() }
    }

    private mutating func compactIfStale() {
        guard heap.count > 2 * deadlines.count + 64 else { return }
        heap = deadlines.map { (at: $0.value, id: $0.key) }
        for i in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(i) }
    }

    private static func less(_ a: (at: UInt64, id: UInt64), _ b: (at: UInt64, id: UInt64)) -> Bool {
        a.at != b.at ? a.at < b.at : a.id < b.id
    }

    private mutating func push(_ entry: (at: UInt64, id: UInt64)) {
        heap.append(entry)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard Self.less(heap[i], heap[parent]) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    private mutating func popTop() {
        heap.swapAt(0, heap.count - 1)
        heap.removeLast()
        if !heap.isEmpty { siftDown(0) }
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && Self.less(heap[l], heap[m]) { m = l }
            if r < heap.count && Self.less(heap[r], heap[m]) { m = r }
            if m == i { return }
            heap.swapAt(i, m)
            i = m
        }
    }
}
