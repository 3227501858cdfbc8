import CWebSockets
import HeraldCore
import HeraldRuntime
#if canImport(Glibc)
import Glibc
#endif

/// Server-Sent Events on the WebSocket port (`GET /sse?channel=…`): a stream is a connection
/// like a WebSocket, served by the same handler (so the same session and fan-out rules apply),
/// whose frames go out as SSE events (`EventStreamEncoder`). Origin and connection limits are
/// those of an upgrade. The status line waits for the first write: a stream the handler closes
/// while it opens (a bad token) is answered with an HTTP error, which a browser's `EventSource`
/// does not retry; a stream closed later ends with an `event: close`, and the browser reconnects
/// with its `Last-Event-ID`.
extension WebSocketServer {
    func openEventStream(_ wsi: OpaquePointer, request: HTTPRequest) -> Int32 {
        let origin = request.header("origin")
        if !options.allowedOrigins.isEmpty && !options.allowedOrigins.contains(origin ?? "") {
            delegate?.webSocketRefused(.origin(origin ?? ""))
            request.respond(status: 403, json: HTTPResponse.errorJSON("origin_not_allowed", Self.originRefusal(origin ?? "")))
            return 0
        }
        var query = request.query
        if let id = LWSRequest.customHeader(wsi, "last-event-id") { query.append(("last-event-id", id)) }
        let asked = ConnectRequest.parse(pairs: query)
        if asked.subscriptions.isEmpty {
            let problem = asked.errors.first
            request.respond(status: 400, json: HTTPResponse.errorJSON(problem?.code.rawValue ?? "bad_request",
                                                              problem?.message ?? "a stream needs at least one channel: /sse?channel=NAME"))
            return 0
        }
        let address = request.peer
        switch admission.admit(address) {
        case nil:
            admitted[wsi] = address
        case .serverFull?:
            delegate?.webSocketRefused(.serverFull)
            request.respond(status: 503, json: HTTPResponse.errorJSON("server_full", "this server holds its most connections (--max-connections); try another node or later"))
            return 0
        case let refusal?:
            delegate?.webSocketRefused(refusal)
            request.respond(status: 429, json: HTTPResponse.errorJSON("too_many_connections", "at most \(admission.maxPerAddress) connections from your address (--max-connections-per-ip)"))
            return 0
        }
        guard let endpoint = endpoint(options.path) else { return -1 }
        let connection = WebSocketConnection(id: nextID, wsi: wsi, peer: address, handler: endpoint.handler, maxMessageBytes: 0)
        connection.server = self
        connection.attachment = attachments.removeValue(forKey: wsi)
        connection.eventStream = EventStreamEncoder(resume: asked.resumePositions)
        connection.streamOrigin = origin.flatMap { options.allowedOrigins.contains($0) ? $0 : nil }
        nextID += idStride
        streams[wsi] = connection
        connections[connection.id] = connection
        endpoint.handler.webSocketOpened(connection, query: query)
        if connection.closeCode != nil {
            connection.requestWritable() // the refusal goes out from the writable callback
            return 0
        }
        // The status line and headers go out now, from this callback (as lws's own SSE example
        // does): lws then keeps reading the socket, so a client that leaves is noticed at once.
        var headers = [("cache-control", "no-cache"), ("x-accel-buffering", "no")]
        headers += corsHeaders(connection)
        guard writeHeaders(wsi, status: 200, contentType: "text/event-stream", length: lws_filepos_t.max, headers: headers) else { return -1 }
        lws_http_mark_sse(wsi)
        // A stream's client sends nothing more, so lws stops reading its socket: lws 4.1 on
        // libev spins on a half-closed HTTP connection whose end of file it has read. A client
        // that leaves is found by the once-a-second check instead (`streamTick`).
        connection.streamStarted = true
        if !writeRaw(wsi, EventStreamEncoder.preamble(retryMillis: options.eventStreamRetryMillis)) { return -1 }
        connection.lastHeard = monotonicMillis()
        armTick(wsi)
        connection.requestWritable()
        return 0
    }

    func streamWritable(_ wsi: OpaquePointer, _ connection: WebSocketConnection) -> Int32 {
        if !connection.streamStarted {
            // Refused while opening: an HTTP answer, not a stream.
            streams.removeValue(forKey: wsi)
            let (status, error) = Self.refusal(connection.closeCode ?? 1011)
            let result = writeHTTP(wsi, HTTPResponse.error(status, error, connection.closeReason, headers: corsHeaders(connection)))
            streamClosed(connection)
            return result
        }
        if let code = connection.closeCode {
            _ = writeRaw(wsi, EventStreamEncoder.close(code: code, reason: connection.closeReason))
            return -1
        }
        if connection.heartbeatDue {
            connection.heartbeatDue = false
            if !writeRaw(wsi, EventStreamEncoder.heartbeat) { return -1 }
        }
        connection.handler.webSocketWritable(connection)
        return 0
    }

    /// Once a second: a client that went away is noticed (with lws's own poll loop, where no
    /// sweep runs ten times a second), and after every ping interval a heartbeat goes out.
    /// Nonzero: close the stream.
    func streamTick(_ wsi: OpaquePointer, _ connection: WebSocketConnection) -> Int32 {
        if Self.peerClosed(lws_get_socket_fd(wsi)) { return -1 }
        let seconds = options.pingIntervalSeconds > 0 ? Int64(options.pingIntervalSeconds) : 25
        if monotonicMillis() - connection.lastHeard >= seconds * 1000 {
            connection.lastHeard = monotonicMillis()
            connection.heartbeatDue = true
            connection.requestWritable()
        }
        armTick(wsi)
        return 0
    }

    /// POLLRDHUP (Linux): the peer closed its end, seen even with unread bytes before it.
    private static let rdhup: Int16 = 0x2000
    private static let gone = rdhup | Int16(POLLHUP) | Int16(POLLERR) | Int16(POLLNVAL)

    /// True when the peer closed its end or the socket failed.
    private static func peerClosed(_ fd: Int32) -> Bool {
        guard fd >= 0 else { return true }
        var entry = pollfd(fd: fd, events: rdhup, revents: 0)
        return poll(&entry, 1, 0) == 1 && entry.revents & gone != 0
    }

    func streamClosed(_ connection: WebSocketConnection) {
        connections.removeValue(forKey: connection.id)
        connection.wsi = nil
        connection.server = nil
        connection.handler.webSocketClosed(connection)
    }

    /// The frames as SSE events, in one write.
    func writeEvents(_ wsi: OpaquePointer, _ connection: WebSocketConnection, frames: [[UInt8]]) -> Bool {
        var bytes: [UInt8] = []
        connection.eventStream!.encode(frames, into: &bytes)
        return writeRaw(wsi, bytes)
    }

    func writeRaw(_ wsi: OpaquePointer, _ bytes: [UInt8]) -> Bool {
        if scratch.count < pre + bytes.count { scratch = [UInt8](repeating: 0, count: pre + Swift.max(bytes.count, 65_536)) }
        return scratch.withUnsafeMutableBufferPointer { buffer -> Bool in
            bytes.withUnsafeBufferPointer { src in
                if let base = src.baseAddress { (buffer.baseAddress! + pre).update(from: base, count: src.count) }
            }
            return lws_write(wsi, buffer.baseAddress! + pre, bytes.count, LWS_WRITE_HTTP) >= 0
        }
    }

    private func armTick(_ wsi: OpaquePointer) {
        lws_set_timer_usecs(wsi, 1_000_000)
    }

    /// Closes the streams whose client has gone, found with one `poll` over all of them. Run
    /// on every wake-up of the service thread (at least ten a second): once lws has read a
    /// stream's end of file it neither closes the wsi nor calls back, and on libev it spins,
    /// so a stream that ends must be closed here, promptly.
    func sweepStreams() {
        guard !streams.isEmpty else { return }
        // At most ten sweeps a second, however often the thread is woken (every live batch).
        let now = monotonicMillis()
        guard now - lastStreamSweep >= 100 else { return }
        lastStreamSweep = now
        let wsis = Array(streams.keys)
        var entries = wsis.map { pollfd(fd: lws_get_socket_fd($0), events: Self.rdhup, revents: 0) }
        guard poll(&entries, nfds_t(entries.count), 0) > 0 else { return }
        for (wsi, entry) in zip(wsis, entries) where entry.revents & Self.gone != 0 {
            // Not a callback of that wsi: it may be closed here, at once (async kills wait
            // for its timers, which lws no longer runs).
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC)
        }
    }

    private func corsHeaders(_ connection: WebSocketConnection) -> [(String, String)] {
        guard let origin = connection.streamOrigin else { return [] }
        return [("access-control-allow-origin", origin), ("vary", "Origin")]
    }

    /// The HTTP answer to a stream closed before it started, by the close code it got.
    static func refusal(_ code: UInt16) -> (status: Int, error: String) {
        switch code {
        case 4001: (401, "invalid_token")
        case 4002: (401, "token_expired")
        case 4004: (503, "token_key_unknown")
        case 1001: (503, "shutting_down")
        default: (400, "bad_request")
        }
    }
}
