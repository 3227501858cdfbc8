import Testing
@testable import HeraldCore

/// The load rule of the coalescing window, with the thread's clocks given by the test.
@Suite struct CoalesceWindowTests {
    let rule = CoalesceWindow.Rule(floorMicros: 2_000, ceilingMicros: 40_000, periodMicros: 100_000, high: 0.75, low: 0.45)

    /// Runs periods of 100 ms at the given CPU shares; returns the window after each.
    func windows(_ shares: [Double], from start: CoalesceWindow? = nil) -> [UInt64] {
        var w = start ?? CoalesceWindow(rule: rule)
        var wall: UInt64 = 1_000_000, cpu: UInt64 = 500
        _ = w.observe(wallMicros: wall, cpuMicros: cpu)
        return shares.map { share in
            wall += 100_000
            cpu += UInt64(share * 100_000)
            _ = w.observe(wallMicros: wall, cpuMicros: cpu)
            return w.micros
        }
    }

    @Test func aLoadedThreadWidensTheWindowUpToTheCeiling() {
        #expect(windows([0.9, 0.9, 0.9, 0.9, 0.9, 0.9]) == [4_000, 8_000, 16_000, 32_000, 40_000, 40_000])
    }

    @Test func betweenTheThresholdsTheWindowHolds() {
        #expect(windows([0.9, 0.9, 0.6, 0.5, 0.7]) == [4_000, 8_000, 8_000, 8_000, 8_000])
    }

    @Test func aQuietThreadNarrowsItBackToTheFloor() {
        #expect(windows([0.95, 0.95, 0.95, 0.2, 0.2, 0.2, 0.1]) == [4_000, 8_000, 16_000, 8_000, 4_000, 2_000, 2_000])
    }

    @Test func aLongQuietStretchHalvesOncePerPeriod() {
        var w = CoalesceWindow(rule: rule)
        var wall: UInt64 = 0, cpu: UInt64 = 0
        _ = w.observe(wallMicros: wall, cpuMicros: cpu)
        for _ in 0..<4 { wall += 100_000; cpu += 95_000; _ = w.observe(wallMicros: wall, cpuMicros: cpu) }
        #expect(w.micros == 32_000)
        wall += 250_000 // two and a half idle periods: two halvings
        #expect(w.observe(wallMicros: wall, cpuMicros: cpu) == 8_000)
        #expect(w.busy == 0)
    }

    @Test func nothingChangesBeforeAPeriodHasPassed() {
        var w = CoalesceWindow(rule: rule)
        #expect(w.observe(wallMicros: 0, cpuMicros: 0) == nil)
        #expect(w.observe(wallMicros: 99_999, cpuMicros: 99_999) == nil)
        #expect(w.micros == 2_000)
        #expect(w.observe(wallMicros: 100_000, cpuMicros: 100_000) == 4_000)
    }

    @Test func aZeroFloorStartsWideningAtOneMillisecondAndSnapsBackToZero() {
        let zero = CoalesceWindow(rule: .init(floorMicros: 0, ceilingMicros: 8_000))
        #expect(windows([0.9, 0.9, 0.1, 0.1], from: zero) == [1_000, 2_000, 1_000, 0])
    }

    @Test func aFixedWindowWhenFloorAndCeilingAreEqual() {
        let fixed = CoalesceWindow(rule: .init(floorMicros: 10_000, ceilingMicros: 10_000))
        #expect(windows([0.99, 0.99, 0.0], from: fixed) == [10_000, 10_000, 10_000])
    }
}
