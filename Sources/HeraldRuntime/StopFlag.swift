import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A one-way flag any thread may set and read: "stop", "ready".
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
