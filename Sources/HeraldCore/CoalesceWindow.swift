/// The coalescing window of a WebSocket thread, following its load: the write schedule bends to
/// what the core can do instead of letting a backlog grow.
///
/// A busy channel's subscribers get at most one write per window, carrying every message that
/// arrived meanwhile (a quiet channel's message still goes out at once). The cost of fan-out is
/// the number of writes (the kernel's send path and waking the reader), so the window is what
/// turns load into bigger writes instead of more of them.
///
/// The rule, applied once per `period` of the thread's own CPU time over wall time (`busy`;
/// `high` 0.9 and `low` 0.6 by default):
/// - `busy` at or above `high`: the window doubles (from `floor`, or 1 ms if the floor is 0),
///   up to `ceiling`. Each doubling halves the writes a busy channel asks for.
/// - `busy` at or below `low`: the window halves, down to `floor`; a quiet stretch of several
///   periods halves it once per period.
/// - in between: it holds.
/// So latency stays bounded by about `ceiling` plus one write round, where a fixed window lets
/// the writes a thread cannot make pile up without bound.
public struct CoalesceWindow: Sendable {
    public struct Rule: Sendable, Equatable {
        public var floorMicros: UInt64
        public var ceilingMicros: UInt64
        public var periodMicros: UInt64
        /// Fractions of one core.
        public var high: Double
        public var low: Double

        public init(floorMicros: UInt64, ceilingMicros: UInt64, periodMicros: UInt64 = 100_000,
                    high: Double = 0.9, low: Double = 0.6) {
            precondition(ceilingMicros >= floorMicros && periodMicros > 0 && low < high)
            self.floorMicros = floorMicros
            self.ceilingMicros = ceilingMicros
            self.periodMicros = periodMicros
            self.high = high
            self.low = low
        }
    }

    public let rule: Rule
    /// The window now.
    public private(set) var micros: UInt64
    /// The thread's CPU share over the last period that was measured.
    public private(set) var busy: Double = 0

    private var started: (wall: UInt64, cpu: UInt64)?

    public init(rule: Rule) {
        self.rule = rule
        micros = rule.floorMicros
    }

    /// Feeds the thread's clocks (monotonic wall time and the thread's CPU time, both µs).
    /// Returns the new window when a period has passed and the window changed, else nil.
    public mutating func observe(wallMicros: UInt64, cpuMicros: UInt64) -> UInt64? {
        guard let (wall0, cpu0) = started else {
            started = (wallMicros, cpuMicros)
            return nil
        }
        guard wallMicros >= wall0 &+ rule.periodMicros else { return nil }
        let elapsed = wallMicros - wall0
        started = (wallMicros, cpuMicros)
        busy = Double(cpuMicros >= cpu0 ? cpuMicros - cpu0 : 0) / Double(elapsed)
        let before = micros
        if busy >= rule.high {
            micros = min(rule.ceilingMicros, max(micros * 2, rule.floorMicros, min(1_000, rule.ceilingMicros)))
        } else if busy <= rule.low {
            let periods = min(elapsed / rule.periodMicros, 16)
            for _ in 0..<periods where micros > rule.floorMicros {
                micros = max(rule.floorMicros, micros / 2)
            }
            if micros < 1_000 && rule.floorMicros < micros { micros = rule.floorMicros }
        }
        return micros != before ? micros : nil
    }
}
