/// A token bucket: `perSecond` operations a second on average, bursts up to `burst`.
public struct RateLimiter: Sendable {
    public let perSecond: Double
    public let burst: Double
    private var tokens: Double
    private var lastMillis: Int64?

    public init(perSecond: Double, burst: Double) {
        self.perSecond = perSecond
        self.burst = burst
        tokens = burst
    }

    /// Takes one token if there is one.
    public mutating func allow(nowMillis: Int64) -> Bool {
        if let last = lastMillis, nowMillis > last {
            tokens = min(burst, tokens + Double(nowMillis - last) / 1000 * perSecond)
        }
        lastMillis = nowMillis
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
