/// What one client received of one stream numbered 1, 2, 3…: which numbers arrived, how many
/// twice, how many after a larger one. `lost` is judged against the numbers that were sent.
public struct SequenceTracker: Sendable {
    private var seen: [UInt64] = [] // bitset, bit n set when n arrived
    public private(set) var highest: UInt64 = 0
    public private(set) var received: UInt64 = 0
    public private(set) var duplicated: UInt64 = 0
    public private(set) var outOfOrder: UInt64 = 0

    public init() {}

    /// Records number `n` (1-based). Returns false when it is a duplicate.
    @discardableResult
    public mutating func observe(_ n: UInt64) -> Bool {
        guard n > 0 else { return false }
        let word = Int((n - 1) >> 6), bit = UInt64(1) << ((n - 1) & 63)
        if word >= seen.count { seen.append(contentsOf: repeatElement(0, count: word - seen.count + 1 + seen.count / 2)) }
        if seen[word] & bit != 0 {
            duplicated += 1
            return false
        }
        seen[word] |= bit
        received += 1
        if n < highest { outOfOrder += 1 } else { highest = n }
        return true
    }

    public func contains(_ n: UInt64) -> Bool {
        guard n > 0 else { return false }
        let word = Int((n - 1) >> 6)
        return word < seen.count && seen[word] & (UInt64(1) << ((n - 1) & 63)) != 0
    }

    /// How many of the numbers `range` did not arrive.
    public func missing(in range: ClosedRange<UInt64>) -> UInt64 {
        var absent: UInt64 = 0
        for n in range where !contains(n) { absent += 1 }
        return absent
    }

    /// The largest n such that 1...n all arrived (the position a client resumes from).
    public var contiguous: UInt64 {
        var n: UInt64 = 0
        for word in seen {
            if word == .max { n += 64; continue }
            return n + UInt64((~word).trailingZeroBitCount)
        }
        return n
    }
}
