import CWebSockets
import HeraldCore
import HeraldRuntime
#if canImport(Glibc)
import Glibc
#endif

/// What the server asks of its owner. Every method runs on the service thread.
public protocol WebSocketHandler: AnyObject {
    /// A WebSocket connection completed its handshake; `query` holds the URL's `key=value` pairs.
    func webSocketOpened(_ connection: WebSocketConnection, query: [(String, String)])
    /// One whole client message (fragments joined), within the size limit.
    func webSocketReceived(_ connection: WebSocketConnection, message: [UInt8], binary: Bool)
    /// The connection can take one write.
    func webSocketWritable(_ connection: WebSocketConnection)
    func webSocketClosed(_ connection: WebSocketConnection)
    /// An HTTP request; answer now with `request.respond`/`serveFile` or later with `respond`.
    func httpRequest(_ request: HTTPRequest)
    /// Another thread called `wakeUp()`: drain its inbox.
    func wokenUp()
    /// The timer set with `WebSocketServer.schedule(afterMicros:)` fired.
    func timerFired()
    /// A client message went over the size limit; the connection is closing with 1009.
    func webSocketOversize(_ connection: WebSocketConnection)
    /// An upgrade was refused before it completed.
    func webSocketRefused(_ refusal: WebSocketRefusal)
    /// A connection was closed because its peer stopped answering pings.
    func webSocketTimedOut(_ connection: WebSocketConnection)
    /// A connection closed before it sent a complete request (handshake timeout, or it gave up).
    func webSocketIncompleteHandshake()
}

public enum WebSocketRefusal: Sendable, Equatable {
    case origin(String)
    case serverFull
    case addressFull(String)
    /// Not a valid RFC 6455 upgrade: no or a malformed `Sec-WebSocket-Key`, or another version.
    case badUpgrade(String)
}

extension WebSocketHandler {
    public func timerFired() {}
    public func webSocketOversize(_ connection: WebSocketConnection) {}
    public func webSocketRefused(_ refusal: WebSocketRefusal) {}
    public func webSocketTimedOut(_ connection: WebSocketConnection) {}
    public func webSocketIncompleteHandshake() {}
}

/// One WebSocket client.
///
/// - Important: use only on the service thread, and only until `webSocketClosed`.
public final class WebSocketConnection {
    public let id: UInt64
    public let peer: String
    /// Owner's per-connection state.
    public var context: AnyObject?
    fileprivate var wsi: OpaquePointer?
    fileprivate var incoming: [UInt8] = []
    fileprivate var incomingTooLarge = false
    fileprivate var closeCode: UInt16?
    fileprivate var closeReason = ""
    /// When the peer last sent anything (a message or a pong), monotonic ms.
    fileprivate var lastHeard = monotonicMillis()
    /// An echo connection (the test-only conformance endpoint) and what it still has to echo.
    fileprivate var isEcho = false
    fileprivate var echoQueue: [(message: [UInt8], binary: Bool)] = []

    init(id: UInt64, wsi: OpaquePointer?, peer: String) {
        self.id = id
        self.wsi = wsi
        self.peer = peer
    }

    public var isOpen: Bool { wsi != nil && closeCode == nil }

    /// Asks for a `webSocketWritable` call when the socket can take data.
    public func requestWritable() {
        guard let wsi else { return }
        lws_callback_on_writable(wsi)
    }

    /// True when `write(frames:)` may be called now, outside `webSocketWritable`: the
    /// connection is open, no close is under way, and lws holds no unsent part of an earlier
    /// write. Writing at once saves the writable round trip (and, with epoll, two `epoll_ctl`s
    /// per delivery); when the kernel takes only part of a write, lws keeps the rest and this
    /// turns false until it is flushed.
    public var canWriteNow: Bool {
        guard let wsi, closeCode == nil, server != nil else { return false }
        return lws_partial_buffered(wsi) == 0
    }

    /// True when the kernel buffer is full: writing now would only queue inside lws.
    public var isChoked: Bool {
        guard let wsi else { return true }
        return lws_send_pipe_choked(wsi) != 0
    }

    /// Closes with `code` (for example 4008, 1001) at the next writable moment.
    /// A peer that never becomes writable (it stopped reading) is dropped after `graceSeconds`.
    public func close(code: UInt16, reason: String, graceSeconds: Int32 = 5) {
        close(code: code, reason: reason, graceSeconds: graceSeconds, afterIncomingMessage: false)
    }

    /// With `afterIncomingMessage`, the close frame waits until the peer has finished sending
    /// the message it is in the middle of (read and dropped meanwhile). Closing while the peer
    /// is still sending leaves its bytes unread when lws closes the socket; the kernel then
    /// answers with a reset, and a peer that has not yet read the close frame never sees it.
    fileprivate func close(code: UInt16, reason: String, graceSeconds: Int32, afterIncomingMessage: Bool) {
        guard let wsi, closeCode == nil else { return }
        closeCode = code
        closeReason = reason
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, graceSeconds)
        if !afterIncomingMessage { requestWritable() }
    }

    fileprivate var server: WebSocketServer?

    /// Writes `frames` as one text message, separated by newlines. Call from `webSocketWritable`,
    /// or anywhere on the service thread while `canWriteNow`.
    @discardableResult
    public func write(frames: [[UInt8]]) -> Bool {
        guard let wsi, let server else { return false }
        return server.writeText(wsi, frames: frames)
    }
}

/// One HTTP request (GET or POST) and its answer.
public final class HTTPRequest {
    public let method: String
    public let path: String
    public let query: [(String, String)]
    public let peer: String
    public fileprivate(set) var body: [UInt8] = []
    fileprivate var headers: [String: String]
    fileprivate var wsi: OpaquePointer?
    fileprivate var response: (status: Int, contentType: String, body: [UInt8], headers: [(String, String)])?
    fileprivate var bodyTooLarge = false
    fileprivate weak var server: WebSocketServer?

    init(method: String, path: String, query: [(String, String)], peer: String, headers: [String: String], wsi: OpaquePointer?) {
        self.method = method
        self.path = path
        self.query = query
        self.peer = peer
        self.headers = headers
        self.wsi = wsi
    }

    /// A request header, by lowercase name (`content-type`, `authorization`, `idempotency-key`, `x-api-key`).
    public func header(_ name: String) -> String? { headers[name] }

    /// Whether the client is still there to be answered.
    public var isConnected: Bool { wsi != nil }

    public func respond(status: Int, contentType: String, body: [UInt8], headers: [(String, String)] = []) {
        guard let wsi, response == nil else { return }
        response = (status, contentType, body, headers)
        lws_callback_on_writable(wsi)
    }

    public func respond(status: Int, json: String, headers: [(String, String)] = []) {
        respond(status: status, contentType: "application/json", body: Array(json.utf8), headers: headers)
    }

    fileprivate var file: (path: String, mime: String)?

    /// Serves a file from disk (only from `httpRequest`, synchronously).
    public func serveFile(path: String, mime: String) {
        file = (path, mime)
    }
}

/// The libwebsockets context: HTTP and WebSocket on one port, served by one thread.
///
/// - Important: `run()` blocks the thread that calls it and owns every lws call.
///   From other threads only `wakeUp()` and `requestStop()` may be called.
public final class WebSocketServer: @unchecked Sendable {
    public struct Options: Sendable {
        public var host: String = "0.0.0.0"
        public var port: Int32 = 8080
        /// The WebSocket endpoint path.
        public var path: String = "/ws"
        /// Client messages above this close with 1009 (whole message, fragments joined).
        public var maxClientMessageBytes = 4096
        /// POST bodies above this answer 413.
        public var maxRequestBodyBytes = 65_536
        public var maxConnections = 100_000
        /// Origins (`scheme://host[:port]`, exact) allowed to upgrade; empty: any origin.
        public var allowedOrigins: [String] = []
        /// WebSocket connections from one client address; 0: no limit.
        public var maxConnectionsPerAddress = 0
        /// Peers whose `X-Forwarded-For` names the client address (see `ClientAddress`).
        public var trustedProxies: [AddressRange] = []
        /// Seconds a client may take to send its request and finish the handshake.
        public var handshakeTimeoutSeconds: Int32 = 10
        /// Ping a connection after this many quiet seconds; 0: never.
        public var pingIntervalSeconds: UInt16 = 25
        /// Hang up when nothing (not even a pong) came back this long after the ping.
        public var pongTimeoutSeconds: UInt16 = 10
        /// Test only (protocol conformance runs): a path whose connections echo every message.
        /// nil, the default, means no such endpoint exists.
        public var echoPath: String?
        public var maxEchoMessageBytes = 16 << 20
        /// epoll (libev) by default; poll is lws's built-in loop.
        public var eventLoop = EventLoop.epoll
        public init() {}
    }

    public let options: Options
    // Service-thread state.
    private let loop: ServiceLoop
    private var context: OpaquePointer? { loop.context }
    private weak var handler: WebSocketHandler?
    private var nextID: UInt64 = 1
    private var connections: [UInt64: WebSocketConnection] = [:]
    private var perAddress: [String: Int] = [:]
    private var awaitingRequest: Set<OpaquePointer> = []
    private var idlePolicy: UnsafeMutablePointer<lws_retry_bo_t>?
    private var httpRequests: [OpaquePointer: HTTPRequest] = [:]
    private var scratch: [UInt8] = []
    private let pre = Int(herald_lws_pre)
    // C memory that must outlive the context.
    private var protocols: UnsafeMutablePointer<lws_protocols>?
    private var cStrings: [UnsafeMutablePointer<CChar>] = []
    // Cross-thread.

    public init(options: Options, handler: WebSocketHandler) {
        self.options = options
        self.handler = handler
        loop = ServiceLoop(kind: options.eventLoop)
        loop.onTimer = { [unowned self] in self.handler?.timerFired() }
    }

    deinit {
        protocols?.deallocate()
        cStrings.forEach { free($0) }
        idlePolicy?.deallocate()
    }

    /// Calls the handler's `timerFired()` on the service thread after `afterMicros` (replacing
    /// any timer already set). Service thread only.
    public func schedule(afterMicros: Int64) {
        loop.schedule(afterMicros: afterMicros)
    }

    /// Creates the listening context. Call on the service thread before `run()`.
    public func start() throws(WebSocketError) {
        lws_set_log_level(Int32(LLL_ERR), nil)
        let protocolName = strdup("herald")!
        cStrings.append(protocolName)
        let table = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 2)
        table.initialize(repeating: lws_protocols(), count: 2)
        table[0].name = UnsafePointer(protocolName)
        table[0].callback = heraldLWSCallback
        table[0].per_session_data_size = MemoryLayout<UnsafeMutableRawPointer?>.size
        table[0].rx_buffer_size = 0
        protocols = table

        var info = lws_context_creation_info()
        info.port = options.port
        if options.host != "0.0.0.0" && !options.host.isEmpty {
            let iface = strdup(options.host)!
            cStrings.append(iface)
            info.iface = UnsafePointer(iface)
        }
        info.protocols = UnsafePointer(table)
        info.gid = -1
        info.uid = -1
        info.user = Unmanaged.passUnretained(self).toOpaque()
        info.options = UInt64(LWS_SERVER_OPTION_VALIDATE_UTF8)
        // No fd_limit_per_thread: below the process's descriptor limit, lws 4.1 then finds the
        // connection for a ready socket by scanning its whole table (wsi_from_fd), 33% of the
        // bench's CPU at 10,000 clients. Sized by `ulimit -n`, the lookup is an index.
        info.timeout_secs = UInt32(max(1, options.handshakeTimeoutSeconds))
        // A connection that sent part of its request holds a header table: drop it as soon.
        info.timeout_secs_ah_idle = UInt32(max(1, options.handshakeTimeoutSeconds))
        if options.pingIntervalSeconds > 0 {
            // lws pings a connection quiet for `ping` seconds and hangs up at `hangup`.
            let policy = UnsafeMutablePointer<lws_retry_bo_t>.allocate(capacity: 1)
            policy.initialize(to: lws_retry_bo_t())
            policy.pointee.secs_since_valid_ping = options.pingIntervalSeconds
            policy.pointee.secs_since_valid_hangup = options.pingIntervalSeconds + options.pongTimeoutSeconds
            idlePolicy = policy
            info.retry_and_idle_policy = UnsafePointer(policy)
        }
        let alpn = strdup("http/1.1")!
        cStrings.append(alpn)
        info.alpn = UnsafePointer(alpn)
        loop.configure(&info)
        guard let ctx = lws_create_context(&info) else {
            loop.creationFailed()
            throw WebSocketError("cannot listen on \(options.host):\(options.port) (is the port in use?)")
        }
        loop.started(ctx)
    }

    /// Services the loop until `requestStop()`; then closes every client with 1001.
    public func run() {
        loop.run(windDown: {
            for connection in connections.values { connection.close(code: 1001, reason: "server shutting down") }
        }, isDone: { connections.isEmpty })
    }

    /// Wakes the service thread; the handler's `wokenUp()` runs there. Any thread.
    public func wakeUp() { loop.wakeUp() }

    /// Asks `run()` to close every client with 1001 and return. Any thread.
    public func requestStop() { loop.requestStop() }

    public var connectionCount: Int { connections.count }

    // MARK: Writing

    fileprivate func writeText(_ wsi: OpaquePointer, frames: [[UInt8]]) -> Bool {
        var total = frames.count > 0 ? frames.count - 1 : 0
        for f in frames { total += f.count }
        if scratch.count < pre + total { scratch = [UInt8](repeating: 0, count: pre + Swift.max(total, 65_536)) }
        return scratch.withUnsafeMutableBufferPointer { buffer -> Bool in
            var offset = pre
            for (i, f) in frames.enumerated() {
                if i > 0 { buffer[offset] = 0x0A; offset += 1 }
                f.withUnsafeBufferPointer { src in
                    if let base = src.baseAddress { (buffer.baseAddress! + offset).update(from: base, count: src.count) }
                }
                offset += f.count
            }
            let n = lws_write(wsi, buffer.baseAddress! + pre, total, LWS_WRITE_TEXT)
            return n >= 0
        }
    }

    // MARK: Callback dispatch (service thread)

    fileprivate func callback(_ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
                              _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        switch reason {
        // Connections that never complete a request: accepted, then gone before their headers.
        case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
            if let wsi { awaitingRequest.insert(wsi) }
            return lws_callback_http_dummy(wsi, reason, user, input, len)
        case LWS_CALLBACK_FILTER_HTTP_CONNECTION:
            if let wsi { awaitingRequest.remove(wsi) }
            return lws_callback_http_dummy(wsi, reason, user, input, len)
        case LWS_CALLBACK_WSI_DESTROY:
            if let wsi, awaitingRequest.remove(wsi) != nil { handler?.webSocketIncompleteHandshake() }
            return lws_callback_http_dummy(wsi, reason, user, input, len)

        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            handler?.wokenUp()
            return 0

        case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
            // Only the WebSocket path may upgrade. (Never handle HTTP_CONFIRM_UPGRADE: CVE-2025-11677.)
            guard let wsi else { return 1 }
            awaitingRequest.remove(wsi)
            let path = Self.header(wsi, WSI_TOKEN_GET_URI) ?? ""
            if let echo = options.echoPath, path == echo { return 0 }
            if path != options.path {
                return refuseUpgrade(wsi, status: 404, code: "not_found", message: "WebSocket upgrades go to \(options.path)")
            }
            if let problem = Self.upgradeProblem(wsi) {
                handler?.webSocketRefused(.badUpgrade(problem.message))
                return refuseUpgrade(wsi, status: problem.status, code: "bad_upgrade", message: problem.message,
                                     headers: problem.status == 426 ? [("sec-websocket-version", "13")] : [])
            }
            if connections.count >= options.maxConnections {
                handler?.webSocketRefused(.serverFull)
                return refuseUpgrade(wsi, status: 503, code: "server_full",
                                     message: "this server holds its most connections (--max-connections); try another node or later")
            }
            if options.maxConnectionsPerAddress > 0 {
                let address = clientAddress(wsi)
                if (perAddress[address] ?? 0) >= options.maxConnectionsPerAddress {
                    handler?.webSocketRefused(.addressFull(address))
                    return refuseUpgrade(wsi, status: 429, code: "too_many_connections",
                                         message: "at most \(options.maxConnectionsPerAddress) connections from your address (--max-connections-per-ip)")
                }
            }
            // Checked here, before the upgrade completes, so a page from a foreign origin
            // never gets a socket (a browser always sends Origin; non-browser clients may not).
            if !options.allowedOrigins.isEmpty {
                let origin = Self.header(wsi, WSI_TOKEN_ORIGIN) ?? ""
                if !options.allowedOrigins.contains(origin) {
                    handler?.webSocketRefused(.origin(origin))
                    return refuseUpgrade(wsi, status: 403, code: "origin_not_allowed",
                                         message: origin.isEmpty ? "this server needs an Origin header from its allowed origins"
                                                                 : "origin \(origin.prefix(200)) is not allowed (--allowed-origin)")
                }
            }
            return 0

        case LWS_CALLBACK_ESTABLISHED:
            guard let wsi, let user else { return -1 }
            let connection = WebSocketConnection(id: nextID, wsi: wsi, peer: clientAddress(wsi))
            connection.server = self
            nextID += 1
            user.storeBytes(of: Unmanaged.passRetained(connection).toOpaque(), as: UnsafeMutableRawPointer?.self)
            connections[connection.id] = connection
            if let echo = options.echoPath, Self.header(wsi, WSI_TOKEN_GET_URI) == echo {
                connection.isEcho = true
                return 0
            }
            perAddress[connection.peer, default: 0] += 1
            handler?.webSocketOpened(connection, query: Self.queryPairs(wsi))
            return 0

        case LWS_CALLBACK_RECEIVE_PONG:
            Self.connection(user)?.lastHeard = monotonicMillis()
            return 0

        case LWS_CALLBACK_RECEIVE:
            guard let wsi, let connection = Self.connection(user) else { return -1 }
            connection.lastHeard = monotonicMillis()
            let messageEnds = lws_is_final_fragment(wsi) != 0 && lws_remaining_packet_payload(wsi) == 0
            if connection.closeCode != nil {
                if connection.incomingTooLarge && messageEnds { connection.requestWritable() }
                return 0
            }
            let limit = connection.isEcho ? options.maxEchoMessageBytes : options.maxClientMessageBytes
            if !connection.incomingTooLarge, let input, len > 0 {
                if connection.incoming.count + len > limit {
                    connection.incomingTooLarge = true
                    connection.incoming = []
                } else {
                    connection.incoming.append(contentsOf: UnsafeRawBufferPointer(start: input, count: len))
                }
            }
            if connection.incomingTooLarge {
                // The 1009 goes out once the rest of the oversize message has been read and
                // dropped (or after the grace, for a peer that never ends it): see close().
                connection.close(code: 1009, reason: "message over \(limit) bytes", graceSeconds: 5,
                                 afterIncomingMessage: !messageEnds)
                if !connection.isEcho { handler?.webSocketOversize(connection) }
                return 0
            }
            if messageEnds {
                let message = connection.incoming
                connection.incoming = []
                if connection.isEcho {
                    connection.echoQueue.append((message, lws_frame_is_binary(wsi) != 0))
                    lws_callback_on_writable(wsi)
                    return 0
                }
                handler?.webSocketReceived(connection, message: message, binary: lws_frame_is_binary(wsi) != 0)
            }
            return 0

        case LWS_CALLBACK_SERVER_WRITEABLE:
            guard let wsi, let connection = Self.connection(user) else { return -1 }
            if let code = connection.closeCode {
                let reason = connection.closeReason
                reason.withCString { r in
                    lws_close_reason(wsi, lws_close_status(rawValue: UInt32(code)),
                                     UnsafeMutableRawPointer(mutating: r).assumingMemoryBound(to: UInt8.self), strlen(r))
                }
                return -1
            }
            if connection.isEcho {
                guard !connection.echoQueue.isEmpty else { return 0 }
                let (message, binary) = connection.echoQueue.removeFirst()
                var buffer = [UInt8](repeating: 0, count: pre + message.count)
                buffer.replaceSubrange(pre..<buffer.count, with: message)
                let n = buffer.withUnsafeMutableBufferPointer {
                    lws_write(wsi, $0.baseAddress! + pre, message.count, binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT)
                }
                if n < 0 { return -1 }
                if !connection.echoQueue.isEmpty { lws_callback_on_writable(wsi) }
                return 0
            }
            handler?.webSocketWritable(connection)
            return 0

        case LWS_CALLBACK_CLOSED:
            guard let user, let raw = user.load(as: UnsafeMutableRawPointer?.self) else { return 0 }
            user.storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
            let connection = Unmanaged<WebSocketConnection>.fromOpaque(raw).takeRetainedValue()
            connections.removeValue(forKey: connection.id)
            if connection.isEcho {
                connection.wsi = nil
                connection.server = nil
                return 0
            }
            if let n = perAddress[connection.peer] { perAddress[connection.peer] = n > 1 ? n - 1 : nil }
            let quietFor = monotonicMillis() - connection.lastHeard
            if connection.closeCode == nil, options.pingIntervalSeconds > 0,
               quietFor >= Int64(options.pingIntervalSeconds + options.pongTimeoutSeconds) * 1000 - 1000 {
                handler?.webSocketTimedOut(connection)
            }
            connection.wsi = nil
            connection.server = nil
            handler?.webSocketClosed(connection)
            return 0

        case LWS_CALLBACK_HTTP:
            guard let wsi else { return -1 }
            let isPost = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0
            let path = Self.header(wsi, isPost ? WSI_TOKEN_POST_URI : WSI_TOKEN_GET_URI) ?? "/"
            var headers: [String: String] = [:]
            if let v = Self.header(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE) { headers["content-type"] = v }
            if let v = Self.header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) { headers["authorization"] = v }
            if let v = Self.header(wsi, WSI_TOKEN_ORIGIN) { headers["origin"] = v }
            for name in ["idempotency-key", "x-api-key"] {
                if let v = Self.customHeader(wsi, name) { headers[name] = v }
            }
            let method = isPost ? "POST" : (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0 ? "GET" : "OTHER")
            let request = HTTPRequest(method: method, path: path, query: Self.queryPairs(wsi), peer: clientAddress(wsi),
                                      headers: headers, wsi: wsi)
            request.server = self
            httpRequests[wsi] = request
            if isPost {
                return 0 // the body follows in LWS_CALLBACK_HTTP_BODY
            }
            return dispatchHTTP(request, wsi)

        case LWS_CALLBACK_HTTP_BODY:
            guard let wsi, let request = httpRequests[wsi] else { return -1 }
            if let input, len > 0, !request.bodyTooLarge {
                if request.body.count + len > options.maxRequestBodyBytes {
                    request.bodyTooLarge = true
                    request.body = []
                } else {
                    request.body.append(contentsOf: UnsafeRawBufferPointer(start: input, count: len))
                }
            }
            return 0

        case LWS_CALLBACK_HTTP_BODY_COMPLETION:
            guard let wsi, let request = httpRequests[wsi] else { return -1 }
            if request.bodyTooLarge {
                request.respond(status: 413, json: #"{"error":"too_large","message":"body is larger than \#(options.maxRequestBodyBytes) bytes"}"#)
                return 0
            }
            return dispatchHTTP(request, wsi)

        case LWS_CALLBACK_HTTP_WRITEABLE:
            guard let wsi, let request = httpRequests[wsi], let response = request.response else { return 0 }
            return writeHTTP(wsi, request: request, response: response)

        case LWS_CALLBACK_CLOSED_HTTP:
            if let wsi, let request = httpRequests.removeValue(forKey: wsi) { request.wsi = nil }
            return 0

        case LWS_CALLBACK_HTTP_FILE_COMPLETION:
            guard let wsi else { return -1 }
            httpRequests.removeValue(forKey: wsi)?.wsi = nil
            return lws_http_transaction_completed(wsi) != 0 ? -1 : 0

        default:
            return lws_callback_http_dummy(wsi, reason, user, input, len)
        }
    }

    private func dispatchHTTP(_ request: HTTPRequest, _ wsi: OpaquePointer) -> Int32 {
        handler?.httpRequest(request)
        if let file = request.file {
            let status = lws_serve_http_file(wsi, file.path, file.mime, nil, 0)
            if status < 0 { return -1 }
            if status > 0 {
                httpRequests.removeValue(forKey: wsi)?.wsi = nil
                return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
            }
            return 0
        }
        return 0
    }

    private func writeHTTP(_ wsi: OpaquePointer, request: HTTPRequest,
                           response: (status: Int, contentType: String, body: [UInt8], headers: [(String, String)])) -> Int32 {
        var head = [UInt8](repeating: 0, count: pre + 4096)
        let ok: Bool = head.withUnsafeMutableBufferPointer { buffer in
            let start = buffer.baseAddress! + pre
            let end = buffer.baseAddress! + buffer.count - 1
            var p: UnsafeMutablePointer<UInt8>? = start
            if lws_add_http_common_headers(wsi, UInt32(response.status), response.contentType,
                                           lws_filepos_t(response.body.count), &p, end) != 0 { return false }
            for (name, value) in response.headers {
                let n = name.lowercased() + ":"
                let added = n.withCString { np in
                    value.withCString { vp in
                        lws_add_http_header_by_name(wsi, UnsafeRawPointer(np).assumingMemoryBound(to: UInt8.self),
                                                    UnsafeRawPointer(vp).assumingMemoryBound(to: UInt8.self),
                                                    Int32(strlen(vp)), &p, end)
                    }
                }
                if added != 0 { return false }
            }
            return lws_finalize_write_http_header(wsi, start, &p, end) == 0
        }
        guard ok else { return -1 }
        httpRequests.removeValue(forKey: wsi)?.wsi = nil
        if !response.body.isEmpty {
            var body = [UInt8](repeating: 0, count: pre + response.body.count)
            body.replaceSubrange(pre..<(pre + response.body.count), with: response.body)
            let n = body.withUnsafeMutableBufferPointer { lws_write(wsi, $0.baseAddress! + pre, response.body.count, LWS_WRITE_HTTP_FINAL) }
            if n < 0 { return -1 }
        }
        return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
    }

    // MARK: Refusing an upgrade

    /// Answers an upgrade that will not happen with a complete HTTP/1.1 response whose body is
    /// the JSON error of PROTOCOL.md, then has lws close the connection (the caller returns 1).
    /// Not `lws_return_http_status`: for an upgrade request lws has not recorded the request's
    /// version yet, so it answered `HTTP/1.0` with an HTML page, which WebSocket clients (Python's
    /// `websockets`) reject as "not a valid HTTP response" instead of reporting the status.
    private func refuseUpgrade(_ wsi: OpaquePointer, status: Int, code: String, message: String,
                               headers: [(String, String)] = []) -> Int32 {
        let body = "{\"error\":\(JSON.quoted(code)),\"message\":\(JSON.quoted(message))}"
        var head = "HTTP/1.1 \(status) \(Self.reasonPhrase(status))\r\ncontent-type: application/json\r\n"
            + "content-length: \(body.utf8.count)\r\nconnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        let bytes = Array((head + "\r\n" + body).utf8)
        var buffer = [UInt8](repeating: 0, count: pre + bytes.count)
        buffer.replaceSubrange(pre..<buffer.count, with: bytes)
        _ = buffer.withUnsafeMutableBufferPointer { lws_write(wsi, $0.baseAddress! + pre, bytes.count, LWS_WRITE_HTTP) }
        return 1
    }

    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 400: "Bad Request"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 426: "Upgrade Required"
        case 429: "Too Many Requests"
        case 503: "Service Unavailable"
        default: "Error"
        }
    }

    /// What makes this upgrade request invalid under RFC 6455 §4.2.1, or nil: lws would accept
    /// older drafts and drop a request without a key without a word.
    static func upgradeProblem(_ wsi: OpaquePointer) -> (status: Int, message: String)? {
        guard let key = header(wsi, WSI_TOKEN_KEY), isWebSocketKey(key) else {
            return (400, "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455)")
        }
        guard header(wsi, WSI_TOKEN_VERSION) == "13" else {
            return (426, "Sec-WebSocket-Version must be 13 (RFC 6455)")
        }
        return nil
    }

    /// A nonce of 16 bytes in padded base64: 22 characters of the alphabet, then `==`.
    static func isWebSocketKey(_ key: String) -> Bool {
        let bytes = Array(key.utf8)
        guard bytes.count == 24, bytes[22] == UInt8(ascii: "="), bytes[23] == UInt8(ascii: "=") else { return false }
        return bytes[..<22].allSatisfy { b in
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"): true
            default: false
            }
        }
    }

    // MARK: Helpers

    static func connection(_ user: UnsafeMutableRawPointer?) -> WebSocketConnection? {
        guard let user, let raw = user.load(as: UnsafeMutableRawPointer?.self) else { return nil }
        return Unmanaged<WebSocketConnection>.fromOpaque(raw).takeUnretainedValue()
    }

    static func header(_ wsi: OpaquePointer, _ token: lws_token_indexes) -> String? {
        let length = Int(lws_hdr_total_length(wsi, token))
        guard length > 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: length + 1)
        guard lws_hdr_copy(wsi, &buffer, Int32(buffer.count), token) >= 0 else { return nil }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func customHeader(_ wsi: OpaquePointer, _ name: String) -> String? {
        let key = name + ":"
        let length = Int(lws_hdr_custom_length(wsi, key, Int32(key.utf8.count)))
        guard length > 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: length + 1)
        guard lws_hdr_custom_copy(wsi, &buffer, Int32(buffer.count), key, Int32(key.utf8.count)) >= 0 else { return nil }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The URL's query as urldecoded `key=value` pairs, in order.
    static func queryPairs(_ wsi: OpaquePointer) -> [(String, String)] {
        var pairs: [(String, String)] = []
        var buffer = [CChar](repeating: 0, count: 1024)
        var index: Int32 = 0
        while index < 64 {
            let n = lws_hdr_copy_fragment(wsi, &buffer, Int32(buffer.count), WSI_TOKEN_HTTP_URI_ARGS, index)
            if n < 0 { break }
            let text = String(decoding: buffer.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let eq = text.firstIndex(of: "=") {
                pairs.append((String(text[..<eq]), String(text[text.index(after: eq)...])))
            } else if !text.isEmpty {
                pairs.append((text, ""))
            }
            index += 1
        }
        return pairs
    }

    /// The TCP peer, or the client a trusted proxy names in `X-Forwarded-For`.
    func clientAddress(_ wsi: OpaquePointer) -> String {
        let peer = Self.peer(wsi)
        guard !options.trustedProxies.isEmpty else { return peer }
        return ClientAddress.resolve(peer: peer, forwardedFor: Self.header(wsi, WSI_TOKEN_X_FORWARDED_FOR), trusted: options.trustedProxies)
    }

    static func peer(_ wsi: OpaquePointer) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        guard let p = lws_get_peer_simple(wsi, &buffer, buffer.count) else { return "?" }
        return String(cString: p)
    }
}

public struct WebSocketError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The lws protocol callback. Runs on the service thread; finds the server through the context user pointer.
func heraldLWSCallback(_ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
                       _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
    guard let wsi, let ctx = lws_get_context(wsi), let raw = lws_context_user(ctx) else {
        return lws_callback_http_dummy(wsi, reason, user, input, len)
    }
    let server = Unmanaged<WebSocketServer>.fromOpaque(raw).takeUnretainedValue()
    return server.callback(wsi, reason, user, input, len)
}


