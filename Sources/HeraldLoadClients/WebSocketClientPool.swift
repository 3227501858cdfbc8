import CWebSockets
import HeraldServiceLoop
#if canImport(Glibc)
import Glibc
#endif

/// What a client pool reports. Every method runs on the pool's service thread.
public protocol WebSocketClientHandler: AnyObject {
    func clientOpened(_ id: Int)
    /// One whole message (fragments joined).
    func clientReceived(_ id: Int, message: [UInt8])
    /// The connection ended: `code` is the peer's close code when it sent one; `error` is set
    /// when the connection could not be made (refused, handshake failed).
    func clientClosed(_ id: Int, code: UInt16?, error: String?)
    /// Another thread called `wakeUp()`.
    func clientPoolWokenUp()
}

/// Many WebSocket client connections served by one thread: the load generator's side of
/// `herald bench`. Connections are named by the caller's integer ids.
///
/// - Important: `connect`, `drop` and `openCount` run on the service thread (from a handler
///   method); `wakeUp` and `requestStop` from any thread.
public protocol ClientPool: AnyObject {
    func start() throws(ClientError)
    /// Services connections until `requestStop()`, then drops them all.
    func run()
    func wakeUp()
    func requestStop()
    var openCount: Int { get }
    /// Starts connecting client `id`; the handler hears `clientOpened` or `clientClosed`.
    func connect(_ id: Int, to target: WebSocketClientPool.Target, origin: String?)
    /// Drops client `id` at once (no close handshake), like a network failure; the handler
    /// hears `clientClosed` afterwards.
    func drop(_ id: Int)
    /// Bytes read from open WebSocket connections, as they came over the wire.
    var receivedBytes: UInt64 { get }
    /// Connections whose server agreed to permessage-deflate.
    var compressedConnections: Int { get }
}

extension ClientPool {
    public var receivedBytes: UInt64 { 0 }
    public var compressedConnections: Int { 0 }
}

/// Fails with a clear message when `ulimit -n` cannot hold `connections` sockets.
func checkDescriptorLimit(connections: Int) throws(ClientError) {
    var limit = rlimit()
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max,
       Int(limit.rlim_cur) < connections + 64 {
        throw ClientError("\(connections) connections need more descriptors than `ulimit -n` allows (\(limit.rlim_cur))")
    }
}

extension ClientPool {
    public func connect(_ id: Int, to target: WebSocketClientPool.Target) { connect(id, to: target, origin: nil) }
}

/// Many WebSocket client connections on one lws context (lws's own poll() loop: for a client
/// that reads from every socket at once it measured cheaper than libev) and one thread.
///
/// - Important: `connect`, `drop` run on the service thread (from a handler method);
///   `wakeUp` and `requestStop` from any thread.
public final class WebSocketClientPool: ClientPool {
    public struct Target: Sendable, Equatable {
        public var host: String
        public var port: Int32
        public var path: String
        /// `http://`: a Server-Sent Events stream (GET, then one message per event's `data:`),
        /// served by `EpollClientPool` only.
        public var eventStream = false
        public init(host: String, port: Int32, path: String) {
            self.host = host
            self.port = port
            self.path = path
        }

        /// Parses `ws://host:port/path?query`, or `http://…` for an event stream.
        public init?(url: String) {
            if url.hasPrefix("http://") {
                guard let t = Target(url: "ws://" + url.dropFirst(7)) else { return nil }
                self = t
                eventStream = true
                return
            }
            guard url.hasPrefix("ws://") else { return nil }
            let rest = url.dropFirst(5)
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            let authority = rest[rest.startIndex..<slash]
            path = slash == rest.endIndex ? "/" : String(rest[slash...])
            // An IPv6 address is in brackets (RFC 3986): ws://[::1]:8080/ws.
            var hostPart = authority
            var portPart: Substring?
            if authority.hasPrefix("[") {
                guard let close = authority.firstIndex(of: "]") else { return nil }
                hostPart = authority[authority.index(after: authority.startIndex)..<close]
                let after = authority[authority.index(after: close)...]
                if !after.isEmpty {
                    guard after.hasPrefix(":") else { return nil }
                    portPart = after.dropFirst()
                }
            } else if let colon = authority.lastIndex(of: ":") {
                hostPart = authority[authority.startIndex..<colon]
                portPart = authority[authority.index(after: colon)...]
            }
            host = String(hostPart)
            if let portPart {
                guard let p = Int32(portPart), p > 0, p < 65536 else { return nil }
                port = p
            } else {
                port = 80
            }
            if host.isEmpty || (!authority.hasPrefix("[") && host.contains(":")) { return nil }
        }

        /// The host as a URL or `Host` header writes it: an IPv6 address in brackets.
        public var hostInURL: String { host.contains(":") ? "[\(host)]" : host }
        /// `host:port` for a `Host` header.
        public var authority: String { "\(hostInURL):\(port)" }
    }

    private weak var handler: WebSocketClientHandler?
    private let loop: ServiceLoop
    private var context: OpaquePointer? { loop.context }
    private var protocols: UnsafeMutablePointer<lws_protocols>?
    private var protocolName: UnsafeMutablePointer<CChar>?
    private var wsis: [Int: OpaquePointer] = [:]
    private var partial: [Int: [UInt8]] = [:]
    private var closeCodes: [Int: UInt16] = [:]
    private var connecting: Int?
    private var failedWhileConnecting = false
    private let maxConnections: Int

    public init(maxConnections: Int, handler: WebSocketClientHandler) {
        self.maxConnections = maxConnections
        self.handler = handler
        loop = ServiceLoop(kind: .poll)
    }

    deinit {
        protocols?.deallocate()
        if let protocolName { free(protocolName) }
    }

    /// Creates the context (no listening socket). Call on the service thread before `run()`.
    public func start() throws(ClientError) {
        try checkDescriptorLimit(connections: maxConnections)
        lws_set_log_level(Int32(LLL_ERR), nil)
        let name = strdup("herald-bench")!
        protocolName = name
        var (info, table) = ServiceLoop.contextInfo(name: name, callback: heraldLWSClientCallback, perSessionBytes: 0, rxBufferSize: 65_536,
                                                    port: CONTEXT_PORT_NO_LISTEN, user: Unmanaged.passUnretained(self).toOpaque())
        protocols = table
        // No fd_limit_per_thread: below the process's descriptor limit, lws 4.1 then finds the
        // connection for a ready socket by scanning its whole table (wsi_from_fd), 33% of the
        // bench's CPU at 10,000 clients. Sized by `ulimit -n`, the lookup is an index.
        info.timeout_secs = 30
        guard loop.createContext(&info) != nil else { throw ClientError("cannot create the client context") }
    }

    /// Services connections until `requestStop()`, then drops them all.
    public func run() {
        loop.run(windDown: { for id in Array(wsis.keys) { drop(id) } }, isDone: { wsis.isEmpty })
    }

    public func wakeUp() { loop.wakeUp() }

    public func requestStop() { loop.requestStop() }

    public var openCount: Int { wsis.count }

    /// Starts connecting client `id`; the handler hears `clientOpened` or `clientClosed`.
    public func connect(_ id: Int, to target: Target, origin: String? = nil) {
        guard let ctx = context else { return }
        var info = lws_client_connect_info()
        var wsi: OpaquePointer?
        connecting = id
        failedWhileConnecting = false
        target.host.withCString { host in
            target.path.withCString { path in
                (origin ?? "http://\(target.hostInURL)").withCString { originC in
                    info.context = ctx
                    info.address = host
                    info.port = target.port
                    info.path = path
                    info.host = host
                    info.origin = originC
                    info.local_protocol_name = UnsafePointer(protocolName)
                    info.opaque_user_data = UnsafeMutableRawPointer(bitPattern: id + 1)
                    wsi = lws_client_connect_via_info(&info)
                }
            }
        }
        connecting = nil
        // A connection can fail inside the call (the handler has heard of it already).
        if let wsi, !failedWhileConnecting { wsis[id] = wsi }
        if wsi == nil && !failedWhileConnecting {
            handler?.clientClosed(id, code: nil, error: "cannot start connecting")
        }
    }

    /// Drops client `id` at once (no close handshake), like a network failure.
    public func drop(_ id: Int) {
        guard let wsi = wsis[id] else { return }
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC)
    }

    fileprivate func callback(_ wsi: OpaquePointer, _ reason: lws_callback_reasons,
                              _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        if reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED {
            handler?.clientPoolWokenUp()
            return 0
        }
        guard let raw = lws_get_opaque_user_data(wsi) else { return 0 }
        let id = Int(bitPattern: raw) - 1
        switch reason {
        case LWS_CALLBACK_CLIENT_ESTABLISHED:
            wsis[id] = wsi
            handler?.clientOpened(id)
        case LWS_CALLBACK_CLIENT_RECEIVE:
            guard let input, len >= 0 else { return 0 }
            let bytes = UnsafeRawBufferPointer(start: input, count: len)
            let final = lws_is_final_fragment(wsi) != 0 && lws_remaining_packet_payload(wsi) == 0
            if final, partial[id] == nil {
                handler?.clientReceived(id, message: Array(bytes))
            } else {
                partial[id, default: []].append(contentsOf: bytes)
                if final, let whole = partial.removeValue(forKey: id) {
                    handler?.clientReceived(id, message: whole)
                }
            }
        case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
            if let input, len >= 2 {
                let p = input.assumingMemoryBound(to: UInt8.self)
                closeCodes[id] = UInt16(p[0]) << 8 | UInt16(p[1])
            }
        case LWS_CALLBACK_CLIENT_CLOSED:
            wsis[id] = nil
            partial[id] = nil
            handler?.clientClosed(id, code: closeCodes.removeValue(forKey: id), error: nil)
        case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
            let message = input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "connection failed"
            if connecting == id { failedWhileConnecting = true }
            wsis[id] = nil
            partial[id] = nil
            closeCodes[id] = nil
            handler?.clientClosed(id, code: nil, error: message)
        default:
            break
        }
        return 0
    }
}

func heraldLWSClientCallback(_ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
                             _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
    guard let wsi, let ctx = lws_get_context(wsi), let raw = lws_context_user(ctx) else {
        return lws_callback_http_dummy(wsi, reason, user, input, len)
    }
    let pool = Unmanaged<WebSocketClientPool>.fromOpaque(raw).takeUnretainedValue()
    return pool.callback(wsi, reason, input, len)
}
