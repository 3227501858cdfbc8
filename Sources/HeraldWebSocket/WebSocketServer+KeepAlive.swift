import CWebSockets
import HeraldCore
import HeraldRuntime

/// Keep-alive pings, kept by Herald rather than by libwebsockets. lws 4.1 keeps a connection's
/// "validity" timer in one list sorted by deadline, and inserts by walking it from the head:
/// every ping and every pong moved the connection to the end past all the others, so one ping
/// round over 10,000 connections walked about 10⁸ list entries at once and stalled delivery
/// for a second and more (the same trap as its handshake timeouts). Here every deadline lies
/// the same span after it is set, so two FIFOs (`DeadlineQueue`) hold them: ping a connection
/// that has been quiet for `pingIntervalSeconds`, hang up on one still quiet
/// `pongTimeoutSeconds` after its ping. The acceptor wakes the thread every tick while it has
/// connections, and each wake-up sweeps both at most four times a second.
extension WebSocketServer {
    /// A WebSocket connection opened, or its peer sent something (a message or a pong).
    func heard(_ connection: WebSocketConnection) {
        connection.lastHeard = monotonicMillis()
        guard options.pingIntervalSeconds > 0 else { return }
        let now = monotonicMicros()
        quiet.set(connection.id, deadline: now + UInt64(options.pingIntervalSeconds) * 1_000_000)
        unanswered.remove(connection.id)
        inlet.wantsTicks.store(true, ordering: .relaxed)
    }

    /// The connection is gone: no more deadlines for it.
    func forgetKeepAlive(_ connection: WebSocketConnection) {
        quiet.remove(connection.id)
        unanswered.remove(connection.id)
        if quiet.count == 0 && unanswered.count == 0 { inlet.wantsTicks.store(false, ordering: .relaxed) }
    }

    /// Pings the connections quiet for the ping interval and hangs up on those that did not
    /// answer within the pong timeout.
    func sweepKeepAlive() {
        guard options.pingIntervalSeconds > 0 else { return }
        let now = monotonicMicros()
        guard now >= nextKeepAliveSweep else { return }
        nextKeepAliveSweep = now + 250_000
        for id in unanswered.expire(now: now) {
            guard let connection = connections[id], let wsi = connection.wsi else { continue }
            // Closed without a close frame: the peer is not there to read one. The CLOSED
            // callback reports it (`webSocketTimedOut`) from how long it has been quiet.
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC)
        }
        for id in quiet.expire(now: now) {
            guard let connection = connections[id], connection.isOpen else { continue }
            unanswered.set(id, deadline: now + UInt64(options.pongTimeoutSeconds) * 1_000_000)
            if connection.canWriteNow { _ = ping(connection) } else {
                connection.pingDue = true
                connection.requestWritable()
            }
        }
    }

    /// Sends a ping frame now; false when lws refused the write. It carries a payload: lws 4.1
    /// hands an empty pong to nobody (`ops-ws.c` skips the callback), and the pong echoes it.
    func ping(_ connection: WebSocketConnection) -> Bool {
        guard let wsi = connection.wsi else { return false }
        connection.pingDue = false
        if scratch.count < pre + Self.pingPayload.count { scratch = [UInt8](repeating: 0, count: pre + 65_536) }
        return scratch.withUnsafeMutableBufferPointer { buffer in
            for (i, byte) in Self.pingPayload.enumerated() { buffer[pre + i] = byte }
            return lws_write(wsi, buffer.baseAddress! + pre, Self.pingPayload.count, LWS_WRITE_PING) >= 0
        }
    }

    static let pingPayload = Array("herald".utf8)
}
