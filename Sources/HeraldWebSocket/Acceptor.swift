import CSocket
import HeraldCore
import HeraldRuntime
import Synchronization

/// Herald's own listening socket and its HTTP front: one thread accepts, reads every request
/// with Herald's HTTP/1.1 framing (`HTTPRequestReader`), answers what cannot be served at once,
/// posts each whole request to a service thread and writes its answer back, in order, on the
/// same connection. A WebSocket upgrade (or a Server-Sent Events request) is handed, with the
/// bytes read so far, to a service thread's libwebsockets (`WebSocketServer.adoptAccepted`).
///
/// Why a front: libwebsockets 4.1.6 mis-frames pipelined requests with bodies (the next
/// request's bytes became a body, and one request was published tens of thousands of times) and
/// has no answer for framing it cannot trust. Here every request is read exactly once, by its
/// own framing, and answered exactly once. It also keeps lws's O(n²) pending-timeout list out
/// of the handshake: a socket reaches lws with its request whole.
///
/// Thread-safe: the front thread owns the connections; service threads take from their inlet
/// and answer through `reply`.
public final class Acceptor: Sendable {
    public struct Options: Sendable {
        public var limits = HTTPLimits()
        /// Seconds a client may take to send a whole request once it started (and its first
        /// request after connecting): past it a partial request is answered 408.
        public var requestTimeoutSeconds = 10
        /// Seconds a keep-alive connection may wait for its next request.
        public var idleTimeoutSeconds = 75
        /// The Server-Sent Events path, handed to libwebsockets like an upgrade; nil: none (admin).
        public var eventStreamPath: String? = "/sse"
        /// The admin listener: no upgrades, no streams; its requests are marked `isAdmin`.
        public var isAdmin = false
        /// Proxies whose `X-Forwarded-For` names a request's client.
        public var trustedProxies: [AddressRange] = []
        /// Requests taken by another thread straight from the front, without a service thread
        /// (`POST /api/publish/…` goes to the node's publisher, which answers it).
        public var diversions: [Diversion] = []
        /// With a connect proxy: each WebSocket upgrade and stream request is handed here first;
        /// the taker answers it (a refusal, which ends the connection) or admits it with an
        /// attachment the service thread gives the connection (`WebSocketConnection.attachment`).
        public var screen: (@Sendable (Screening) -> Void)?
        public init() {}
    }

    /// An upgrade (or stream) request waiting for a verdict: `request.respond` refuses it,
    /// `admit` hands it on to libwebsockets. Either, once, from any thread.
    public struct Screening: Sendable {
        public let request: HTTPRequest
        public let isStream: Bool
        let front: Acceptor
        let connection: UInt64
        let ticket: UInt64

        public func admit(attachment: [UInt8]) { front.admit(connection, ticket, attachment) }
    }

    /// Requests of one method under one path prefix, handed to `take` on the front thread; the
    /// taker answers them (from any thread) with `HTTPRequest.respond`.
    public struct Diversion: Sendable {
        public let method: String
        public let pathPrefix: String
        public let take: @Sendable (HTTPRequest) -> Void
        public init(method: String, pathPrefix: String, take: @escaping @Sendable (HTTPRequest) -> Void) {
            self.method = method
            self.pathPrefix = pathPrefix
            self.take = take
        }
    }

    /// One service thread's share: sockets to adopt and requests to answer.
    public final class Inlet: Sendable {
        private let arrivals = Mutex<[Arrival]>([])
        /// Handshakes this service thread is waiting for: while there are any, the accept
        /// thread wakes it every `tickMillis` so their deadlines are checked without other events.
        let pendingHandshakes = Atomic<Int>(0)
        /// The service thread keeps keep-alive deadlines: it is woken every tick too.
        let wantsTicks = Atomic<Bool>(false)
        /// Connections closed before they sent a whole request (timed out, or the peer left).
        let incomplete = Atomic<Int>(0)
        let wake: @Sendable () -> Void

        public init(wake: @escaping @Sendable () -> Void) { self.wake = wake }

        func post(_ arrival: Arrival) { arrivals.withLock { $0.append(arrival) } }

        /// What arrived for this thread since the last call. Service thread.
        func take() -> [Arrival] {
            arrivals.withLock { a in
                defer { a.removeAll(keepingCapacity: true) }
                return a
            }
        }
    }

    enum Arrival: Sendable {
        /// A socket for libwebsockets, the bytes already read from it (an upgrade or stream
        /// request), and what a screening attached to it.
        case socket(Int32, [UInt8], attachment: [UInt8]?)
        case request(Request)
    }

    struct Request: Sendable {
        let front: Acceptor
        let connection: UInt64
        /// Its place among the connection's requests: answers are written in this order.
        let ticket: UInt64
        let head: HTTPRequestHead
        let body: [UInt8]
        let peer: String
        /// The answer ends the connection (`connection: close`).
        let closeAfter: Bool

        /// The request as the routes see it; its answer goes back to the front.
        func httpRequest(admin: Bool, trustedProxies: [AddressRange]) -> HTTPRequest {
            let isHead = head.method == "HEAD"
            let closeAfter = closeAfter
            let front = front, connection = connection, ticket = ticket
            var headers: [String: String] = [:]
            for field in head.fields {
                headers[field.name] = headers[field.name].map { $0 + ", " + field.value } ?? field.value
            }
            let client = trustedProxies.isEmpty ? peer
                : ClientAddress.resolve(peer: peer, forwardedFor: headers["x-forwarded-for"], trusted: trustedProxies)
            // HEAD is GET without the body (RFC 9110 9.3.2): the routes see GET, the answer drops the body.
            return HTTPRequest(method: isHead ? "GET" : head.method, path: head.path,
                               query: head.query.map { ($0.name, $0.value) }, peer: client, headers: headers,
                               body: body, isHead: isHead, isAdmin: admin) { response in
                front.reply(connection, ticket, response.serialized(head: isHead, close: closeAfter))
            }
        }
    }

    let fd: Int32
    public let inlets: [Inlet]
    public let options: Options
    private let stopFlag = StopFlag()
    private let thread = Mutex<OSThread?>(nil)
    static let tickMillis: Int32 = 100
    /// Answers from the service threads, for the front thread to write.
    private let replies = Mutex<[(UInt64, UInt64, [UInt8])]>([])
    private let wakeFD: Int32

    /// The accept thread's name.
    let name: String

    public init(host: String, port: Int32, inlets: [Inlet], options: Options = Options(), backlog: Int32 = 4096,
                name: String = "herald-accept") throws(WebSocketError) {
        precondition(!inlets.isEmpty, "an acceptor feeds at least one service thread")
        guard port > 0, port < 65536 else { throw WebSocketError("port \(port) is not a TCP port") }
        let fd = herald_tcp_listen(host, UInt16(port), backlog)
        guard fd >= 0 else {
            throw WebSocketError(fd == -EADDRINUSE ? "cannot listen on \(host):\(port) (is the port in use?)"
                                                   : "cannot listen on \(host):\(port) (error \(-fd))")
        }
        let wakeFD = herald_eventfd()
        guard wakeFD >= 0 else {
            _ = herald_close(fd)
            throw WebSocketError("cannot make an eventfd (error \(herald_errno()))")
        }
        self.fd = fd
        self.wakeFD = wakeFD
        self.inlets = inlets
        self.options = options
        self.name = name
    }

    /// Starts the front thread (`herald-accept`, or the name given).
    public func start() {
        thread.withLock { t in
            guard t == nil else { return }
            t = OSThread(name: name) { [self] in
                let front = HTTPFront(acceptor: self, listener: fd, wakeFD: wakeFD)
                front.run(stop: stopFlag)
            }
        }
    }

    /// Writes an answer on the connection its request came from. Any thread. Only the first
    /// answer the front has not taken yet wakes it (it drains the eventfd before taking them
    /// all), so a burst of answers costs one wake-up.
    func reply(_ connection: UInt64, _ ticket: UInt64, _ bytes: [UInt8]) {
        let first = replies.withLock { r in
            r.append((connection, ticket, bytes))
            return r.count == 1
        }
        if first { herald_eventfd_signal(wakeFD) }
    }

    /// Admissions of screened upgrades, for the front thread.
    private let admissions = Mutex<[(UInt64, UInt64, [UInt8])]>([])

    func admit(_ connection: UInt64, _ ticket: UInt64, _ attachment: [UInt8]) {
        admissions.withLock { $0.append((connection, ticket, attachment)) }
        herald_eventfd_signal(wakeFD)
    }

    func takeAdmissions() -> [(UInt64, UInt64, [UInt8])] {
        admissions.withLock { a in
            defer { a.removeAll(keepingCapacity: true) }
            return a
        }
    }

    func takeReplies() -> [(UInt64, UInt64, [UInt8])] {
        replies.withLock { r in
            defer { r.removeAll(keepingCapacity: true) }
            return r
        }
    }

    /// Ends the front thread (within a tick) and waits for it; its connections are closed. New
    /// connections then wait in the backlog until `close()`.
    public func stop() {
        stopFlag.set()
        let t = thread.withLock { t in defer { t = nil }; return t }
        t?.join()
    }

    /// Closes the listening socket and any socket no service thread adopted. After `stop()`
    /// and after the service threads have ended.
    public func close() {
        for inlet in inlets {
            for case let .socket(s, _, _) in inlet.take() { _ = herald_close(s) }
        }
        _ = herald_close(fd)
        _ = herald_close(wakeFD)
    }
}
