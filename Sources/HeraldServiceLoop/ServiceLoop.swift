import CLibev
import CWebSockets
import HeraldRuntime
#if canImport(Glibc)
import Glibc
#endif

/// How the lws service thread waits for sockets.
public enum EventLoop: String, Sendable, CaseIterable {
    /// libev on epoll, handed to lws as a foreign loop: a wakeup costs what is ready.
    case epoll
    /// lws's built-in loop: one `poll()` over every connection per wakeup.
    case poll
}

/// One lws context and its service loop, shared by the server and the bench's client pool:
/// service until asked to stop, let the owner wind its connections down for up to a second,
/// then destroy the context.
///
/// - Important: `run`, `schedule` and `context` belong to the service thread; `wakeUp` and
///   `requestStop` may be called from any thread (hence `@unchecked Sendable`): before `started`
///   a wake-up does nothing, after it `context` is published by `ready`'s release.
public final class ServiceLoop: @unchecked Sendable {
    public let kind: EventLoop
    public private(set) var context: OpaquePointer?
    private let stopFlag = StopFlag()
    private let ready = StopFlag()
    /// The libev loop (epoll) and the one-element array lws reads it from.
    private var evLoop: UnsafeMutableRawPointer?
    private var foreignLoops: UnsafeMutablePointer<UnsafeMutableRawPointer?>?

    /// What `schedule(afterMicros:)` calls when it fires (service thread).
    public var onTimer: (() -> Void)?
    /// The one timer: an lws timer on the poll loop, a libev timer on the epoll loop.
    private let lwsTimer: UnsafeMutablePointer<herald_timer>
    private let evTimer: UnsafeMutablePointer<herald_ev_timer>

    /// epoll only: wakes lws every 100 ms so its own timers (handshake and close timeouts,
    /// pings) run on time. lws services them when it handles an event, but arms libev's timer
    /// only for the deadline it knew when that timer last fired, so a nearer one set meanwhile
    /// would otherwise wait for the next event.
    private let lwsTick: UnsafeMutablePointer<herald_ev_timer>
    public static let lwsTickSeconds = 0.1

    public init(kind: EventLoop) {
        self.kind = kind
        lwsTimer = .allocate(capacity: 1)
        lwsTimer.initialize(to: herald_timer())
        evTimer = .allocate(capacity: 1)
        evTimer.initialize(to: herald_ev_timer())
        lwsTick = .allocate(capacity: 1)
        lwsTick.initialize(to: herald_ev_timer())
    }

    deinit {
        foreignLoops?.deallocate()
        lwsTimer.deallocate()
        evTimer.deallocate()
        lwsTick.deallocate()
    }

    /// Calls `onTimer` on the service thread after `afterMicros`, replacing any timer already
    /// set. Service thread only.
    public func schedule(afterMicros: Int64) {
        let owner = Unmanaged.passUnretained(self).toOpaque()
        if let evLoop {
            evTimer.pointee.owner = owner
            evTimer.pointee.fn = { owner in
                guard let owner else { return }
                Unmanaged<ServiceLoop>.fromOpaque(owner).takeUnretainedValue().onTimer?()
            }
            herald_ev_timer_set(evLoop, evTimer, Double(max(0, afterMicros)) / 1e6)
            return
        }
        guard let ctx = context else { return }
        lwsTimer.pointee.owner = owner
        // `sul` is the struct's first field: the same address, without an inout copy.
        let sul = UnsafeMutableRawPointer(lwsTimer).assumingMemoryBound(to: lws_sorted_usec_list_t.self)
        lws_sul_schedule(ctx, 0, sul, { sul in
            guard let sul, let owner = herald_timer_owner(sul) else { return }
            Unmanaged<ServiceLoop>.fromOpaque(owner).takeUnretainedValue().onTimer?()
        }, afterMicros)
    }

    /// What every Herald lws context starts from: one protocol (`name`, served by `callback`,
    /// with `perSessionBytes` of user data per connection) and no listening socket; `user` is the
    /// context's user pointer. The caller owns `name` and deallocates `protocols` after the
    /// context is gone.
    public static func contextInfo(name: UnsafePointer<CChar>,
                                   callback: @convention(c) (OpaquePointer?, lws_callback_reasons, UnsafeMutableRawPointer?,
                                                             UnsafeMutableRawPointer?, Int) -> Int32,
                                   perSessionBytes: Int,
                                   rxBufferSize: Int, port: Int32, user: UnsafeMutableRawPointer)
        -> (info: lws_context_creation_info, protocols: UnsafeMutablePointer<lws_protocols>) {
        let table = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 2)
        table.initialize(repeating: lws_protocols(), count: 2)
        table[0].name = name
        table[0].callback = callback
        table[0].per_session_data_size = perSessionBytes
        table[0].rx_buffer_size = rxBufferSize
        var info = lws_context_creation_info()
        info.port = port
        info.protocols = UnsafePointer(table)
        info.gid = -1
        info.uid = -1
        info.user = user
        return (info, table)
    }

    /// Creates the context for `info` on this loop (`configure`, then `started` or
    /// `creationFailed`); nil when lws could not. Service thread.
    public func createContext(_ info: inout lws_context_creation_info) -> OpaquePointer? {
        configure(&info)
        guard let ctx = lws_create_context(&info) else {
            creationFailed()
            return nil
        }
        started(ctx)
        return ctx
    }

    /// Fills in the loop fields of `info`; call just before `lws_create_context`.
    public func configure(_ info: inout lws_context_creation_info) {
        guard kind == .epoll else { return }
        guard let loop = herald_ev_loop_new() else { return } // no epoll: lws's own poll() loop
        let loops = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 1)
        loops.initialize(to: loop)
        evLoop = loop
        foreignLoops = loops
        info.options |= UInt64(LWS_SERVER_OPTION_LIBEV)
        info.foreign_loops = loops
    }

    /// `lws_create_context` failed: release what `configure` made.
    public func creationFailed() {
        if let evLoop { herald_ev_loop_destroy(evLoop) }
        evLoop = nil
    }

    public func started(_ ctx: OpaquePointer) {
        context = ctx
        ready.set()
        if let evLoop {
            lwsTick.pointee.owner = UnsafeMutableRawPointer(ctx)
            lwsTick.pointee.fn = { ctx in
                if let ctx { lws_cancel_service(OpaquePointer(ctx)) }
            }
            herald_ev_timer_every(evLoop, lwsTick, Self.lwsTickSeconds)
        }
    }

    public func run(windDown: () -> Void, isDone: () -> Bool) {
        guard let ctx = context else { return }
        while !stopFlag.isSet {
            if let evLoop {
                herald_ev_run_once(evLoop)
            } else if lws_service(ctx, 0) < 0 {
                break
            }
        }
        windDown()
        let deadline = monotonicMillis() + 1_000
        while !isDone() && monotonicMillis() < deadline {
            if let evLoop {
                herald_ev_run_for(evLoop, 0.02)
            } else if lws_service(ctx, 0) < 0 {
                break
            }
        }
        if let evLoop { herald_ev_timer_stop(evLoop, lwsTick) }
        lws_context_destroy(ctx)
        context = nil
        if let evLoop {
            herald_ev_timer_stop(evLoop, evTimer)
            herald_ev_loop_destroy(evLoop)
        }
        evLoop = nil
    }

    /// Makes the service thread call EVENT_WAIT_CANCELLED.
    public func wakeUp() {
        guard ready.isSet, let ctx = context else { return }
        lws_cancel_service(ctx)
    }

    public func requestStop() {
        stopFlag.set()
        wakeUp()
    }
}
