import CWebSockets

/// One lws context and its service loop, shared by the server and the bench's client pool:
/// service until asked to stop, let the owner wind its connections down for up to a second,
/// then destroy the context.
///
/// - Important: `run` and `context` belong to the service thread; `wakeUp` and `requestStop`
///   may be called from any thread once `started` ran.
final class ServiceLoop {
    private(set) var context: OpaquePointer?
    private let stopFlag = AtomicFlag()
    private let ready = AtomicFlag()

    func started(_ ctx: OpaquePointer) {
        context = ctx
        ready.set()
    }

    func run(windDown: () -> Void, isDone: () -> Bool) {
        guard let ctx = context else { return }
        while !stopFlag.isSet {
            if lws_service(ctx, 0) < 0 { break }
        }
        windDown()
        let deadline = monotonicMillis() + 1_000
        while !isDone() && monotonicMillis() < deadline {
            if lws_service(ctx, 0) < 0 { break }
        }
        lws_context_destroy(ctx)
        context = nil
    }

    /// Makes the service thread call EVENT_WAIT_CANCELLED.
    func wakeUp() {
        guard ready.isSet, let ctx = context else { return }
        lws_cancel_service(ctx)
    }

    func requestStop() {
        stopFlag.set()
        wakeUp()
    }
}
