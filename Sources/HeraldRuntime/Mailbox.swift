import Dispatch
import Synchronization

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
