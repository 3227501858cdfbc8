#if canImport(Glibc)
import Glibc
#endif

/// Milliseconds since the Unix epoch (message times, token expiry).
public func wallMillis() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}

/// The monotonic clock (intervals, timers, latency), which never goes back.
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

public func monotonicMicros() -> UInt64 { monotonicNanos() / 1_000 }

/// CPU time (user and system) the calling thread has used, in µs: how loaded a service thread is.
public func threadCPUMicros() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1_000
}
public func monotonicMillis() -> UInt64 { monotonicNanos() / 1_000_000 }

/// A random lowercase hex string (epochs, generated message ids).
public func randomHex(bytes: Int) -> String {
    // One draw from the system generator (a getrandom call) per 8 bytes, not one per byte.
    let digits: [UInt8] = Array("0123456789abcdef".utf8)
    var generator = SystemRandomNumberGenerator()
    var out = [UInt8]()
    out.reserveCapacity(bytes * 2)
    var word: UInt64 = 0
    for i in 0..<bytes {
        if i % 8 == 0 { word = generator.next() }
        let b = UInt8(truncatingIfNeeded: word >> (UInt64(i % 8) * 8))
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
}
