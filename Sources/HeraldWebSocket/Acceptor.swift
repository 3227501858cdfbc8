import CSocket
import HeraldRuntime
import Synchronization

/// Herald's own listening socket and the thread that accepts on it, for every WebSocket service
/// thread: accepted sockets go round-robin to the threads' `Inlet`s, and each service thread
/// adopts its own into its lws context (`WebSocketServer.adoptAccepted`) with lws's pending
/// timeouts taken off, enforcing the handshake timeout itself: libwebsockets 4.1 keeps pending
/// timeouts in one sorted list and inserts by walking it from the head, so 5,000 handshakes at
/// once cost O(n²) steps on the service thread. (lws 4.1 cannot share one listening port
/// between contexts either, so one acceptor is also what makes several threads possible.)
///
/// Thread-safe: the accept thread posts, each service thread takes from its inlet.
public final class Acceptor: Sendable {
    /// One service thread's share of the accepted sockets.
    public final class Inlet: Sendable {
        private let accepted = Mutex<[Int32]>([])
        /// Handshakes this service thread is waiting for: while there are any, the accept
        /// thread wakes it every `tickMillis` so their deadlines are checked without other events.
        let pendingHandshakes = Atomic<Int>(0)
        let wake: @Sendable () -> Void

        public init(wake: @escaping @Sendable () -> Void) { self.wake = wake }

        func post(_ fd: Int32) { accepted.withLock { $0.append(fd) } }

        /// The sockets accepted for this thread since the last call. Service thread.
        func take() -> [Int32] {
            accepted.withLock { sockets in
                defer { sockets.removeAll(keepingCapacity: true) }
                return sockets
            }
        }
    }

    let fd: Int32
    public let inlets: [Inlet]
    private let stopFlag = StopFlag()
    private let thread = Mutex<OSThread?>(nil)
    static let tickMillis: Int32 = 100

    /// The accept thread's name.
    let name: String

    public init(host: String, port: Int32, inlets: [Inlet], backlog: Int32 = 4096, name: String = "herald-accept") throws(WebSocketError) {
        precondition(!inlets.isEmpty, "an acceptor feeds at least one service thread")
        guard port > 0, port < 65536 else { throw WebSocketError("port \(port) is not a TCP port") }
        let fd = herald_tcp_listen(host, UInt16(port), backlog)
        guard fd >= 0 else {
            throw WebSocketError(fd == -EADDRINUSE ? "cannot listen on \(host):\(port) (is the port in use?)"
                                                   : "cannot listen on \(host):\(port) (error \(-fd))")
        }
        self.fd = fd
        self.inlets = inlets
        self.name = name
    }

    /// Starts the accept thread (`herald-accept`, or the name given).
    public func start() {
        thread.withLock { t in
            guard t == nil else { return }
            t = OSThread(name: name) { [self] in run() }
        }
    }

    /// Accepts until `stop()`, handing the sockets round-robin to the inlets.
    private func run() {
        var next = 0
        var handed = [Int](repeating: 0, count: inlets.count)
        while !stopFlag.isSet {
            let ready = herald_wait_readable(fd, Self.tickMillis)
            if stopFlag.isSet { break }
            if ready > 0 {
                while true {
                    let client = herald_tcp_accept(fd)
                    if client >= 0 {
                        let i = next
                        next = (next + 1) % inlets.count
                        inlets[i].post(client)
                        handed[i] += 1
                        // Hand over in batches: the service thread adopts while more arrive.
                        if handed[i] == 64 { inlets[i].wake(); handed[i] = 0 }
                        continue
                    }
                    // Out of descriptors (EMFILE/ENFILE): the connection waits in the backlog;
                    // try again after a tick rather than spin.
                    if client == -EMFILE || client == -ENFILE || client == -ENOBUFS || client == -ENOMEM {
                        if handed.allSatisfy({ $0 == 0 }) { _ = herald_wait_readable(-1, Self.tickMillis) } // sleeps a tick
                    }
                    if client == -ECONNABORTED || client == -EINTR { continue } // a peer that reset first
                    break // EAGAIN: every waiting connection is taken
                }
                for i in inlets.indices where handed[i] > 0 { inlets[i].wake(); handed[i] = 0 }
            } else if ready == 0 {
                for inlet in inlets where inlet.pendingHandshakes.load(ordering: .relaxed) > 0 { inlet.wake() }
            }
        }
    }

    /// Ends the accept thread (within a tick) and waits for it. New connections then wait in
    /// the backlog until `close()`.
    public func stop() {
        stopFlag.set()
        let t = thread.withLock { t in defer { t = nil }; return t }
        t?.join()
    }

    /// Closes the listening socket and any socket no service thread adopted. After `stop()`
    /// and after the service threads have ended.
    public func close() {
        for inlet in inlets { for s in inlet.take() { _ = herald_close(s) } }
        _ = herald_close(fd)
    }
}
