import CSocket
import HeraldRuntime
import Synchronization

/// Herald's own listening socket and the thread that accepts on it. The service thread adopts
/// the accepted sockets into lws (`WebSocketServer.adoptAccepted`) with lws's pending timeouts
/// taken off, and enforces the handshake timeout itself (`HandshakeDeadlines`): libwebsockets
/// 4.1 keeps pending timeouts in one sorted list and inserts by walking it from the head, so
/// 5,000 handshakes at once cost O(n²) steps on the service thread.
///
/// Thread-safe: the accept thread posts, the service thread takes.
final class Acceptor: Sendable {
    let fd: Int32
    private let accepted = Mutex<[Int32]>([])
    private let stopFlag = StopFlag()
    /// Handshakes the service thread is waiting for: while there are any, the accept thread
    /// wakes it every `tickMillis` so their deadlines are checked even without other events.
    let pendingHandshakes = Atomic<Int>(0)
    static let tickMillis: Int32 = 100

    init(host: String, port: Int32, backlog: Int32 = 4096) throws(WebSocketError) {
        guard port > 0, port < 65536 else { throw WebSocketError("port \(port) is not a TCP port") }
        let fd = herald_tcp_listen(host, UInt16(port), backlog)
        guard fd >= 0 else {
            throw WebSocketError(fd == -EADDRINUSE ? "cannot listen on \(host):\(port) (is the port in use?)"
                                                   : "cannot listen on \(host):\(port) (error \(-fd))")
        }
        self.fd = fd
    }

    /// Accepts until `stop()`, handing each socket to `wake`'s thread. Runs on its own thread.
    func run(wake: @Sendable () -> Void) {
        while !stopFlag.isSet {
            let ready = herald_wait_readable(fd, Self.tickMillis)
            if stopFlag.isSet { break }
            if ready > 0 {
                var got = 0
                while true {
                    let client = herald_tcp_accept(fd)
                    if client >= 0 {
                        accepted.withLock { $0.append(client) }
                        got += 1
                        // Hand over in batches: the service thread adopts while more arrive.
                        if got % 64 == 0 { wake() }
                        continue
                    }
                    // Out of descriptors (EMFILE/ENFILE): the connection waits in the backlog;
                    // try again after a tick rather than spin.
                    if client == -EMFILE || client == -ENFILE || client == -ENOBUFS || client == -ENOMEM {
                        if got == 0 { _ = herald_wait_readable(-1, Self.tickMillis) } // sleeps a tick
                    }
                    if client == -ECONNABORTED || client == -EINTR { continue } // a peer that reset first
                    break // EAGAIN: every waiting connection is taken
                }
                if got % 64 != 0 { wake() }
            } else if ready == 0, pendingHandshakes.load(ordering: .relaxed) > 0 {
                wake()
            }
        }
    }

    /// The sockets accepted since the last call. Service thread.
    func take() -> [Int32] {
        accepted.withLock { sockets in
            defer { sockets.removeAll(keepingCapacity: true) }
            return sockets
        }
    }

    /// Ends `run` within a tick, then closes the listening socket and any socket not adopted.
    func stop() {
        stopFlag.set()
    }

    func close() {
        for s in take() { _ = herald_close(s) }
        _ = herald_close(fd)
    }
}
