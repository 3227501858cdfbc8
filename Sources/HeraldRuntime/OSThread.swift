#if canImport(Glibc)
import Glibc
#endif

/// A dedicated OS thread for a blocking C loop (not a Swift task: the cooperative pool is
/// only as wide as the machine, and a blocked task starves every other one).
///
/// - Important: `join` from one thread only, once.
public final class OSThread: @unchecked Sendable {
    // @unchecked: `handle` is written once, by init, before any other thread can see the object.
    private var handle = pthread_t()
    private let body: @Sendable () -> Void

    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        self.body = { setThreadName(name); body() }
        let box = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&handle, nil, { raw in
            let thread = Unmanaged<OSThread>.fromOpaque(raw!).takeRetainedValue()
            thread.body()
            return nil
        }, box)
        precondition(result == 0, "pthread_create failed: \(result)")
    }

    public func join() { pthread_join(handle, nil) }
}

/// Names the calling thread (shows in `top -H` and `perf`), through `/proc/thread-self/comm`:
/// `pthread_setname_np` is not visible to Swift and `prctl` is variadic. Names are cut to the
/// kernel's 15 bytes.
public func setThreadName(_ name: String) {
    let fd = open("/proc/thread-self/comm", O_WRONLY)
    guard fd >= 0 else { return }
    let bytes = Array(name.utf8.prefix(15))
    _ = bytes.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}
