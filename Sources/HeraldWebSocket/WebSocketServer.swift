import CWebSockets
import HeraldCore
import HeraldDeflate
import HeraldRuntime
import HeraldServiceLoop
#if canImport(Glibc)
import Glibc
#endif

/// One libwebsockets context: HTTP and WebSocket on the node's port, served by one thread. A
/// node runs one per `--ws-threads`; they share the `Acceptor` (each adopts the sockets of its
/// `Acceptor.Inlet`) and the connection limits (`Admission`).
///
/// - Important: `run()` blocks the thread that calls it and owns every lws call.
///   From other threads only `wakeUp()` and `requestStop()` may be called.
public final class WebSocketServer: @unchecked Sendable {
    public struct Options: Sendable {
        public var host: String = "0.0.0.0"
        public var port: Int32 = 8080
        /// The WebSocket endpoint path.
        public var path: String = "/ws"
        /// The Server-Sent Events path: a stream served by the same handler as `path`.
        public var eventStreamPath: String = "/sse"
        /// How long a browser waits before it reconnects a stream that ended.
        public var eventStreamRetryMillis = 1_000
        /// Client messages above this close with 1009 (whole message, fragments joined).
        public var maxClientMessageBytes = 4096
        /// Origins (`scheme://host[:port]`, exact) allowed to upgrade; empty: any origin.
        public var allowedOrigins: [String] = []
        /// Peers whose `X-Forwarded-For` names the client address (see `ClientAddress`).
        public var trustedProxies: [AddressRange] = []
        /// Seconds a client may take to send its request and finish the handshake.
        public var handshakeTimeoutSeconds: Int32 = 10
        /// Ping a connection after this many quiet seconds; 0: never.
        public var pingIntervalSeconds: UInt16 = 25
        /// Hang up when nothing (not even a pong) came back this long after the ping.
        public var pongTimeoutSeconds: UInt16 = 10
        /// Negotiate permessage-deflate (RFC 7692) with clients that offer it.
        public var permessageDeflate = true
        /// Messages (and frames in a batch) below this many bytes go out uncompressed.
        public var compressionMinBytes = 128
        /// zlib's level for what this thread compresses itself (1 fastest … 9 smallest).
        public var compressionLevel: Int32 = 6
        public init() {}
    }

    public let options: Options
    // Service-thread state.
    let loop: ServiceLoop
    private var context: OpaquePointer? { loop.context }
    weak var delegate: WebSocketServerDelegate?
    /// WebSocket endpoints besides `options.path` (see `addEndpoint`), by path.
    private var endpoints: [String: (handler: WebSocketHandler, maxMessageBytes: Int)] = [:]
    /// Connection ids are unique in the node: thread i of n hands out i+1, i+1+n, ...
    var nextID: UInt64
    let idStride: UInt64
    var connections: [UInt64: WebSocketConnection] = [:]
    /// Server-Sent Events streams, by their wsi (see `+EventStream`).
    var streams: [OpaquePointer: WebSocketConnection] = [:]
    /// When `sweepStreams` last polled them (monotonic ms).
    var lastStreamSweep: UInt64 = 0
    /// Upgrades holding a place in `admission`, by the address it was counted for; given back
    /// when the connection is destroyed.
    var admitted: [OpaquePointer: String] = [:]
    /// What the front's screening (connect proxy) attached to adopted sockets, until they open.
    var attachments: [OpaquePointer: [UInt8]] = [:]
    /// The attachment of the socket being adopted right now.
    var adopting: [UInt8]?
    let admission: Admission
    var awaitingRequest: Set<OpaquePointer> = []
    /// This thread's share of the accepted sockets (see `Acceptor`), and the handshake
    /// deadlines of the connections it adopted, which lws does not time out itself.
    let inlet: Acceptor.Inlet
    /// Sockets of the admin listener (`--admin-listen`), if this thread serves it: plain HTTP
    /// only, answered by the delegate's `adminRequest`; `adminConnections` are their wsis.
    public var adminInlet: Acceptor.Inlet?
    var adminConnections: Set<OpaquePointer> = []
    var handshakes = DeadlineQueue<OpaquePointer>()
    /// Keep-alive (`WebSocketServer+KeepAlive`): when each connection is due a ping, and when
    /// each pinged one must have answered.
    var quiet = DeadlineQueue<UInt64>()
    var unanswered = DeadlineQueue<UInt64>()
    var nextKeepAliveSweep: UInt64 = 0
    private var idlePolicy: UnsafeMutablePointer<lws_retry_bo_t>?
    /// Answers to the requests libwebsockets was handed (see `+HTTP`), waiting for a writable callback.
    var httpAnswers: [OpaquePointer: HTTPResponse] = [:]
    var scratch: [UInt8] = []
    let pre = Int(herald_lws_pre)
    /// permessage-deflate (`+Deflate`): what each handshake under way agreed, this thread's
    /// compressors by window size, its one inflater (reset per message), and the byte counts.
    var negotiating: [OpaquePointer: PerMessageDeflate] = [:]
    var deflaters: [Int: Deflater?] = [:]
    var inflater: Inflater?
    /// The compressed body of the write under way (its capacity kept between writes).
    var body: [UInt8] = []
    public var wireBytes: WireBytes?
    // C memory that must outlive the context.
    private var protocols: UnsafeMutablePointer<lws_protocols>?
    private var cStrings: [UnsafeMutablePointer<CChar>] = []
    // Cross-thread.

    /// `loop` may exist before the server, so that other threads can hold its `wakeUp`.
    /// - Parameter thread: this server's index among the node's `threads` service threads.
    public init(options: Options, loop: ServiceLoop, inlet: Acceptor.Inlet, admission: Admission,
                thread: Int = 0, threads: Int = 1, delegate: WebSocketServerDelegate) {
        precondition(thread >= 0 && thread < threads)
        self.options = options
        self.delegate = delegate
        self.loop = loop
        self.inlet = inlet
        self.admission = admission
        nextID = UInt64(thread) + 1
        idStride = UInt64(threads)
        loop.onTimer = { [unowned self] in self.delegate?.timerFired() }
    }

    /// Serves another WebSocket path with its own handler and message size limit (held by the
    /// server). Admission (origin, connection limits) is the same as for `options.path`. Call
    /// before `start()`.
    public func addEndpoint(path: String, handler: WebSocketHandler, maxMessageBytes: Int) {
        precondition(context == nil && path != options.path, "endpoints are added before start, once per path")
        endpoints[path] = (handler, maxMessageBytes)
    }

    func endpoint(_ path: String) -> (handler: WebSocketHandler, maxMessageBytes: Int)? {
        if path == options.path {
            guard let delegate else { return nil }
            return (delegate, options.maxClientMessageBytes)
        }
        return endpoints[path]
    }

    deinit {
        protocols?.deallocate()
        cStrings.forEach { free($0) }
        idlePolicy?.deallocate()
    }

    /// Why a request from `origin` (empty: none sent) is refused: the message of every
    /// `origin_not_allowed` answer (upgrade, stream, CORS preflight).
    public static func originRefusal(_ origin: String) -> String {
        origin.isEmpty ? "this server needs an Origin header from its allowed origins"
            : "origin \(origin.prefix(200)) is not allowed (--allowed-origin)"
    }

    /// Calls the handler's `timerFired()` on the service thread after `afterMicros` (replacing
    /// any timer already set). Service thread only.
    public func schedule(afterMicros: Int64) {
        loop.schedule(afterMicros: afterMicros)
    }

    /// Creates the context. Call on the service thread before `run()`.
    public func start() throws(WebSocketError) {
        // lws's errors go to stderr, but for the one it logs on every socket handed over with
        // its request already read (`lws_adopt_socket_readbuf` says "calling service").
        lws_set_log_level(Int32(LLL_ERR), herald_lws_log)
        let protocolName = strdup("herald")!
        cStrings.append(protocolName)
        // lws does not listen: the acceptor does, and the service thread adopts its sockets.
        var (info, table) = ServiceLoop.contextInfo(name: protocolName, callback: heraldLWSCallback,
                                                    perSessionBytes: MemoryLayout<UnsafeMutableRawPointer?>.size, rxBufferSize: 0,
                                                    port: CONTEXT_PORT_NO_LISTEN_SERVER, user: Unmanaged.passUnretained(self).toOpaque())
        protocols = table
        // No LWS_SERVER_OPTION_VALIDATE_UTF8: lws would check compressed bytes. Herald checks
        // every text message once whole (and inflated), and close reasons (`+Deflate`).
        if options.permessageDeflate { info.extensions = herald_extension_table() }
        // No fd_limit_per_thread: below the process's descriptor limit, lws 4.1 then finds the
        // connection for a ready socket by scanning its whole table (wsi_from_fd), 33% of the
        // bench's CPU at 10,000 clients. Sized by `ulimit -n`, the lookup is an index.
        // lws's own handshake timeouts are taken off adopted sockets (`adoptAccepted`); these
        // still bound a keep-alive HTTP connection's next request.
        info.timeout_secs = UInt32(max(1, options.handshakeTimeoutSeconds))
        info.timeout_secs_ah_idle = UInt32(max(1, options.handshakeTimeoutSeconds))
        // Herald pings (`WebSocketServer+KeepAlive`): lws's own validity timers are off (a
        // hang-up time of 0), or it would fall back to its default of a ping every 300 s.
        let policy = UnsafeMutablePointer<lws_retry_bo_t>.allocate(capacity: 1)
        policy.initialize(to: lws_retry_bo_t())
        idlePolicy = policy
        info.retry_and_idle_policy = UnsafePointer(policy)
        let alpn = strdup("http/1.1")!
        cStrings.append(alpn)
        info.alpn = UnsafePointer(alpn)
        guard loop.createContext(&info) != nil else { throw WebSocketError("cannot start libwebsockets for \(options.host):\(options.port)") }
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

    /// This thread's WebSocket connections.
    public var connectionCount: Int { connections.count }

    // MARK: Callback dispatch (service thread)

    fileprivate func callback(_ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
                              _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        switch reason {
        // Connections that never complete a request: accepted, then gone before their headers.
        case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
            if let wsi { awaitingRequest.insert(wsi) }
            if let wsi, let attachment = adopting { attachments[wsi] = attachment }
            return lws_callback_http_dummy(wsi, reason, user, input, len)
        case LWS_CALLBACK_FILTER_HTTP_CONNECTION:
            if let wsi { awaitingRequest.remove(wsi); handshakeDone(wsi) }
            return lws_callback_http_dummy(wsi, reason, user, input, len)
        case LWS_CALLBACK_WSI_DESTROY:
            if let wsi { handshakeDone(wsi); adminConnections.remove(wsi); attachments[wsi] = nil; negotiating[wsi] = nil }
            if let wsi, let address = admitted.removeValue(forKey: wsi) { admission.release(address) }
            if let wsi, awaitingRequest.remove(wsi) != nil { delegate?.webSocketIncompleteHandshake() }
            return lws_callback_http_dummy(wsi, reason, user, input, len)

        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            sweepStreams()
            adoptAccepted()
            expireHandshakes()
            sweepKeepAlive()
            delegate?.wokenUp()
            return 0

        case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
            // Only the WebSocket path may upgrade. (Never handle HTTP_CONFIRM_UPGRADE: CVE-2025-11677.)
            guard let wsi else { return 1 }
            awaitingRequest.remove(wsi)
            handshakeDone(wsi)
            let path = LWSRequest.header(wsi, WSI_TOKEN_GET_URI) ?? ""
            if adminConnections.contains(wsi) {
                return refuseUpgrade(wsi, status: 404, code: "not_found", message: "the admin listener takes no WebSocket upgrades")
            }
            if endpoint(path) == nil {
                return refuseUpgrade(wsi, status: 404, code: "not_found", message: "WebSocket upgrades go to \(options.path)")
            }
            if let problem = LWSRequest.upgradeProblem(wsi) {
                delegate?.webSocketRefused(.badUpgrade(problem.message))
                return refuseUpgrade(wsi, status: problem.status, code: "bad_upgrade", message: problem.message,
                                     headers: problem.status == 426 ? [("sec-websocket-version", "13")] : [])
            }
            // Checked here, before the upgrade completes, so a page from a foreign origin
            // never gets a socket (a browser always sends Origin; non-browser clients may not).
            if !options.allowedOrigins.isEmpty {
                let origin = LWSRequest.header(wsi, WSI_TOKEN_ORIGIN) ?? ""
                if !options.allowedOrigins.contains(origin) {
                    delegate?.webSocketRefused(.origin(origin))
                    return refuseUpgrade(wsi, status: 403, code: "origin_not_allowed", message: Self.originRefusal(origin))
                }
            }
            // Last, so that only an upgrade that goes ahead takes a place (on any thread).
            let address = clientAddress(wsi)
            switch admission.admit(address) {
            case nil:
                admitted[wsi] = address
                return 0
            case .serverFull?:
                delegate?.webSocketRefused(.serverFull)
                return refuseUpgrade(wsi, status: 503, code: "server_full",
                                     message: "this server holds its most connections (--max-connections); try another node or later")
            case let refusal?:
                delegate?.webSocketRefused(refusal)
                return refuseUpgrade(wsi, status: 429, code: "too_many_connections",
                                     message: "at most \(admission.maxPerAddress) connections from your address (--max-connections-per-ip)")
            }

        case LWS_CALLBACK_ESTABLISHED:
            guard let wsi, let user, let endpoint = endpoint(LWSRequest.header(wsi, WSI_TOKEN_GET_URI) ?? "") else { return -1 }
            let connection = WebSocketConnection(id: nextID, wsi: wsi, peer: clientAddress(wsi),
                                                 handler: endpoint.handler, maxMessageBytes: endpoint.maxMessageBytes)
            connection.server = self
            connection.attachment = attachments.removeValue(forKey: wsi)
            connection.deflate = negotiating.removeValue(forKey: wsi)
            nextID += idStride
            user.storeBytes(of: Unmanaged.passRetained(connection).toOpaque(), as: UnsafeMutableRawPointer?.self)
            connections[connection.id] = connection
            heard(connection)
            endpoint.handler.webSocketOpened(connection, query: LWSRequest.queryPairs(wsi))
            return 0

        case LWS_CALLBACK_RECEIVE_PONG:
            if let connection = WebSocketConnection.from(user) { heard(connection) }
            return 0

        case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY:
            guard let wsi else { return 1 }
            return confirmExtension(wsi)

        case LWS_CALLBACK_ADD_HEADERS:
            guard let wsi else { return 0 }
            return addHeaders(wsi, input)

        case LWS_CALLBACK_RECEIVE:
            guard let wsi, let connection = WebSocketConnection.from(user) else { return -1 }
            return receive(wsi, connection, input, len)

        case LWS_CALLBACK_SERVER_WRITEABLE:
            guard let wsi, let connection = WebSocketConnection.from(user) else { return -1 }
            if let code = connection.closeCode {
                let reason = connection.closeReason
                reason.withCString { r in
                    lws_close_reason(wsi, lws_close_status(rawValue: UInt32(code)),
                                     UnsafeMutableRawPointer(mutating: r).assumingMemoryBound(to: UInt8.self), strlen(r))
                }
                return -1
            }
            if connection.pingDue {
                // The keep-alive ping first; data waits for the next writable call if lws could
                // not send all of it.
                if !ping(connection) { return -1 }
                if lws_partial_buffered(wsi) != 0 { connection.requestWritable(); return 0 }
            }
            connection.handler.webSocketWritable(connection)
            return 0

        case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
            // The payload of the peer's close frame: a big-endian code, then a reason.
            if let connection = WebSocketConnection.from(user) {
                if let input, len >= 2 {
                    let bytes = input.assumingMemoryBound(to: UInt8.self)
                    connection.peerCloseCode = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
                    // A close reason must be UTF-8 (RFC 6455 §5.5.1), checked here now that lws does not.
                    if let wsi, len > 2, !UTF8Validator.isValid(UnsafeBufferPointer(start: bytes + 2, count: len - 2)) {
                        return failNow(wsi, connection, code: 1007, reason: "invalid UTF-8 in the close reason")
                    }
                } else {
                    connection.peerCloseCode = 1005
                }
            }
            return 0

        case LWS_CALLBACK_CLOSED:
            guard let user, let raw = user.load(as: UnsafeMutableRawPointer?.self) else { return 0 }
            user.storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
            let connection = Unmanaged<WebSocketConnection>.fromOpaque(raw).takeRetainedValue()
            connections.removeValue(forKey: connection.id)
            forgetKeepAlive(connection)
            let quietFor = monotonicMillis() - connection.lastHeard
            if connection.closeCode == nil, options.pingIntervalSeconds > 0,
               quietFor >= Int64(options.pingIntervalSeconds + options.pongTimeoutSeconds) * 1000 - 1000 {
                connection.handler.webSocketTimedOut(connection)
            }
            connection.wsi = nil
            connection.server = nil
            connection.handler.webSocketClosed(connection)
            return 0

        case LWS_CALLBACK_TIMER:
            if let wsi, let stream = streams[wsi] { return streamTick(wsi, stream) }
            return 0

        case LWS_CALLBACK_HTTP, LWS_CALLBACK_HTTP_BODY, LWS_CALLBACK_HTTP_BODY_COMPLETION, LWS_CALLBACK_HTTP_WRITEABLE,
             LWS_CALLBACK_CLOSED_HTTP, LWS_CALLBACK_HTTP_FILE_COMPLETION:
            return httpCallback(wsi, reason, input, len)

        default:
            return lws_callback_http_dummy(wsi, reason, user, input, len)
        }
    }

    /// The TCP peer, or the client a trusted proxy names in `X-Forwarded-For`.
    func clientAddress(_ wsi: OpaquePointer) -> String {
        let peer = LWSRequest.peer(wsi)
        guard !options.trustedProxies.isEmpty else { return peer }
        return ClientAddress.resolve(peer: peer, forwardedFor: LWSRequest.header(wsi, WSI_TOKEN_X_FORWARDED_FOR), trusted: options.trustedProxies)
    }

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


