import Dispatch
import HeraldWebSocket
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A dedicated OS thread for a blocking C loop (not a Swift task: the cooperative pool is
/// only as wide as the machine, and a blocked task starves every other one).
public final class OSThread: @unchecked Sendable {
    private var handle = pthread_t()
    private let body: @Sendable () -> Void

    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        self.body = { Self.setName(name); body() }
        let box = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&handle, nil, { raw in
            let thread = Unmanaged<OSThread>.fromOpaque(raw!).takeRetainedValue()
            thread.body()
            return nil
        }, box)
        precondition(result == 0, "pthread_create failed: \(result)")
    }

    public func join() { pthread_join(handle, nil) }

    private static func setName(_ name: String) {
        setThreadName(name)
    }
}

/// A many-producer, one-consumer queue that a blocking thread can wait on.
public final class Mailbox<Item: Sendable>: Sendable {
    private let items = Mutex<[Item]>([])
    private let signal = DispatchSemaphore(value: 0)

    public init() {}

    public func post(_ item: Item) {
        items.withLock { $0.append(item) }
        signal.signal()
    }

    /// Everything queued, waiting up to `timeoutMillis` for the first item.
    public func take(timeoutMillis: Int) -> [Item] {
        let now = drain()
        if !now.isEmpty { return now }
        _ = signal.wait(timeout: .now() + .milliseconds(timeoutMillis))
        return drain()
    }

    public func drain() -> [Item] {
        items.withLock { queued in
            let all = queued
            queued.removeAll(keepingCapacity: true)
            return all
        }
    }
}

/// A flag any thread may set and read.
public final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    public init() {}
    public func set() { value.store(true, ordering: .releasing) }
    public var isSet: Bool { value.load(ordering: .acquiring) }

    /// Sleeps up to `millis`, waking early when the flag is set.
    public func sleep(millis: Int) {
        var left = millis
        while left > 0 && !isSet {
            let step = min(left, 50)
            usleep(useconds_t(step * 1000))
            left -= step
        }
    }
}

func wallMillis() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}

func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// A random lowercase hex string (epochs, generated message ids).
func randomHex(bytes: Int) -> String {
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

func monotonicMicros() -> UInt64 { monotonicNanos() / 1_000 }
