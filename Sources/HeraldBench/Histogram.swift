/// A high-dynamic-range histogram of microsecond values (the HdrHistogram layout): exact below
/// 2,048 µs, then 1,024 sub-buckets per power of two, so every recorded value is kept within
/// 0.1% from 1 µs to hours, in a fixed 40 KB. Percentiles read the bucket's upper edge, so they
/// never flatter the system measured.
public struct Histogram: Sendable {
    static let subBucketBits = 11
    static let subBucketCount = 1 << subBucketBits // 2048
    static let halfCount = subBucketCount / 2
    static let maxExponent = 30

    private var counts: [UInt64]
    public private(set) var count: UInt64 = 0
    public private(set) var max: UInt64 = 0
    public private(set) var min: UInt64 = .max
    private var sum: Double = 0

    public init() {
        counts = [UInt64](repeating: 0, count: Self.subBucketCount + Self.maxExponent * Self.halfCount)
    }

    static func index(_ value: UInt64) -> Int {
        if value < UInt64(subBucketCount) { return Int(value) }
        let magnitude = 63 - value.leadingZeroBitCount // floor(log2)
        let shift = magnitude - (subBucketBits - 1)
        let sub = Int(value >> UInt64(shift)) // in [1024, 2048)
        let idx = subBucketCount + (shift - 1) * halfCount + (sub - halfCount)
        return Swift.min(idx, subBucketCount + maxExponent * halfCount - 1)
    }

    /// The largest value that lands in bucket `index`.
    static func upperEdge(_ index: Int) -> UInt64 {
        if index < subBucketCount { return UInt64(index) }
        let k = index - subBucketCount
        let shift = k / halfCount + 1
        let sub = UInt64(k % halfCount + halfCount)
        return ((sub + 1) << UInt64(shift)) - 1
    }

    public mutating func record(_ value: UInt64) {
        counts[Self.index(value)] += 1
        count += 1
        sum += Double(value)
        if value > max { max = value }
        if value < min { min = value }
    }

    public mutating func merge(_ other: Histogram) {
        guard other.count > 0 else { return }
        for i in counts.indices where other.counts[i] != 0 { counts[i] += other.counts[i] }
        count += other.count
        sum += other.sum
        max = Swift.max(max, other.max)
        min = Swift.min(min, other.min)
    }

    public var mean: Double { count == 0 ? 0 : sum / Double(count) }

    /// The value at percentile `p` (0...100): the smallest bucket edge with at least p% of the
    /// values at or below it; the exact maximum for 100.
    public func value(atPercentile p: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        if p >= 100 { return max }
        let rank = Swift.max(1, UInt64((p / 100 * Double(count)).rounded(.up)))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() where c != 0 {
            seen += c
            if seen >= rank { return Swift.min(Self.upperEdge(i), max) }
        }
        return max
    }
}
