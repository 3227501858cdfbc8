/// Deadlines that all lie the same span after the moment they are set (a handshake timeout, a
/// ping interval), so they expire in the order they were set: a FIFO, O(1) to add, remove and
/// expire, where a sorted list costs a walk per insertion.
///
/// A key removed (or set again) before its deadline leaves a stale entry behind; it is skipped
/// when it reaches the front, so removal does not search.
public struct DeadlineQueue<Key: Hashable> {
    private var entries: [(deadline: UInt64, key: Key, generation: UInt64)] = []
    private var head = 0
    private var live: [Key: UInt64] = [:]
    private var generation: UInt64 = 0

    public init() {}

    /// Keys waiting for their deadline.
    public var count: Int { live.count }

    public func contains(_ key: Key) -> Bool { live[key] != nil }

    /// Sets `key`'s deadline (replacing an earlier one). Deadlines must not go back: each is at
    /// least the one set before it.
    public mutating func set(_ key: Key, deadline: UInt64) {
        precondition(entries.last.map { deadline >= $0.deadline } ?? true, "deadlines are set in order")
        generation &+= 1
        live[key] = generation
        entries.append((deadline, key, generation))
    }

    /// Removes `key` (done in time, or gone); true if it was waiting.
    @discardableResult
    public mutating func remove(_ key: Key) -> Bool {
        let was = live.removeValue(forKey: key) != nil
        if live.isEmpty { entries.removeAll(keepingCapacity: true); head = 0 }
        return was
    }

    /// The keys whose deadline is at or before `now`, oldest first; they are removed.
    public mutating func expire(now: UInt64) -> [Key] {
        var due: [Key] = []
        while head < entries.count, entries[head].deadline <= now {
            let e = entries[head]
            head += 1
            if live[e.key] == e.generation {
                live[e.key] = nil
                due.append(e.key)
            }
        }
        if head == entries.count {
            entries.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 1024 && head * 2 > entries.count {
            entries.removeFirst(head)
            head = 0
        }
        return due
    }

    /// The earliest deadline still waiting, if any (stale entries in front are dropped).
    public mutating func next() -> UInt64? {
        while head < entries.count, live[entries[head].key] != entries[head].generation { head += 1 }
        return head < entries.count ? entries[head].deadline : nil
    }
}
