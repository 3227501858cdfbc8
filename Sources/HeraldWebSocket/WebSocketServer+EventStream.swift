import CWebSockets
import HeraldCore

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
            request.respond(status: 403, json: Self.errorJSON("origin_not_allowed", (origin ?? "").isEmpty
                ? "this server needs an Origin header from its allowed origins"
                : "origin \(origin!.prefix(200)) is not allowed (--allowed-origin)"))
            return 0
        }
        var query = request.query
        if let id = LWSRequest.customHeader(wsi, "last-event-id") { query.append(("last-event-id", id)) }
        let asked = ConnectRequest.parse(pairs: query)
        if asked.subscriptions.isEmpty {
            let problem = asked.errors.first
            request.respond(status: 400, json: Self.errorJSON(problem?.code.rawValue ?? "bad_request",
                                                              problem?.message ?? "a stream needs at least one channel: /sse?channel=NAME"))
            return 0
        }
        let address = request.peer
        switch admission.admit(address) {
        case nil:
            admitted[wsi] = address
        case .serverFull?:
            delegate?.webSocketRefused(.serverFull)
            request.respond(status: 503, json: Self.errorJSON("server_full", "this server holds its most connections (--max-connections); try another node or later"))
            return 0
        case let refusal?:
            delegate?.webSocketRefused(refusal)
            request.respond(status: 429, json: Self.errorJSON("too_many_connections", "at most \(admission.maxPerAddress) connections from your address (--max-connections-per-ip)"))
            return 0
        }
        guard let endpoint = endpoint(options.path) else { return -1 }
        httpRequests.removeValue(forKey: wsi)?.wsi = nil
        let connection = WebSocketConnection(id: nextID, wsi: wsi, peer: address, handler: endpoint.handler, maxMessageBytes: 0)
        connection.server = self
        connection.eventStream = EventStreamEncoder(resume: asked.resumePositions)
        connection.streamOrigin = origin.flatMap { options.allowedOrigins.contains($0) ? $0 : nil }
        nextID += idStride
        streams[wsi] = connection
        connections[connection.id] = connection
        endpoint.handler.webSocketOpened(connection, query: query)
        connection.requestWritable()
        return 0
    }

    func streamWritable(_ wsi: OpaquePointer, _ connection: WebSocketConnection) -> Int32 {
        if !connection.streamStarted {
            if let code = connection.closeCode {
                // Refused while opening: an HTTP answer, not a stream.
                streams.removeValue(forKey: wsi)
                let (status, error) = Self.refusal(code)
                let result = writeHTTP(wsi, request: nil, response: (status, "application/json",
                                                                      Array(Self.errorJSON(error, connection.closeReason).utf8), corsHeaders(connection)))
                streamClosed(connection)
                return result
            }
            var headers = [("cache-control", "no-cache"), ("x-accel-buffering", "no")]
            headers += corsHeaders(connection)
            guard writeHeaders(wsi, status: 200, contentType: "text/event-stream", length: lws_filepos_t.max, headers: headers) else { return -1 }
            lws_http_mark_sse(wsi)
            lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0)
            connection.streamStarted = true
            if !writeRaw(wsi, EventStreamEncoder.preamble(retryMillis: options.eventStreamRetryMillis)) { return -1 }
            armHeartbeat(wsi)
        }
        if let code = connection.closeCode {
            _ = writeRaw(wsi, EventStreamEncoder.close(code: code, reason: connection.closeReason))
            return -1
        }
        if connection.heartbeatDue {
            connection.heartbeatDue = false
            if !writeRaw(wsi, EventStreamEncoder.heartbeat) { return -1 }
            armHeartbeat(wsi)
        }
        connection.handler.webSocketWritable(connection)
        return 0
    }

    func streamHeartbeatDue(_ connection: WebSocketConnection) {
        connection.heartbeatDue = true
        connection.requestWritable()
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

    private func writeRaw(_ wsi: OpaquePointer, _ bytes: [UInt8]) -> Bool {
        if scratch.count < pre + bytes.count { scratch = [UInt8](repeating: 0, count: pre + Swift.max(bytes.count, 65_536)) }
        return scratch.withUnsafeMutableBufferPointer { buffer -> Bool in
            bytes.withUnsafeBufferPointer { src in
                if let base = src.baseAddress { (buffer.baseAddress! + pre).update(from: base, count: src.count) }
            }
            return lws_write(wsi, buffer.baseAddress! + pre, bytes.count, LWS_WRITE_HTTP) >= 0
        }
    }

    /// A comment line after every ping interval without one, so proxies keep a quiet stream.
    private func armHeartbeat(_ wsi: OpaquePointer) {
        let seconds = options.pingIntervalSeconds > 0 ? Int64(options.pingIntervalSeconds) : 25
        lws_set_timer_usecs(wsi, lws_usec_t(seconds * 1_000_000))
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
        case 1001: (503, "shutting_down")
        default: (400, "bad_request")
        }
    }

    static func errorJSON(_ code: String, _ message: String) -> String {
        "{\"error\":\(JSON.quoted(code)),\"message\":\(JSON.quoted(message))}"
    }
}
