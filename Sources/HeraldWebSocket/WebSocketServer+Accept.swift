import CWebSockets
import HeraldRuntime

/// Accepting without lws's sorted timeout list: the acceptor thread hands over sockets, the
/// service thread adopts them with their lws pending timeout taken off (an O(1) removal, where
/// leaving it costs the next insertion a walk past every connection still in its handshake),
/// and `handshakes`, a FIFO since every deadline is the same span away, times them out.
extension WebSocketServer {
    /// Service thread: adopts what the acceptor handed this thread since the last wake-up.
    func adoptAccepted() {
        guard let ctx = loop.context else { return }
        let sockets = inlet.take()
        let adminSockets = adminInlet?.take() ?? []
        guard !sockets.isEmpty || !adminSockets.isEmpty else { return }
        let deadline = monotonicMicros() + UInt64(max(1, options.handshakeTimeoutSeconds)) * 1_000_000
        for (fd, admin) in sockets.map({ ($0, false) }) + adminSockets.map({ ($0, true) }) {
            // On failure lws closes the socket itself.
            guard let wsi = lws_adopt_socket(ctx, fd) else { continue }
            lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0)
            handshakes.set(wsi, deadline: deadline)
            if admin { adminConnections.insert(wsi) }
        }
        publishPendingHandshakes()
    }

    /// Tells the acceptors whether this thread waits for handshakes (they then wake it each tick).
    private func publishPendingHandshakes() {
        inlet.pendingHandshakes.store(handshakes.count, ordering: .relaxed)
        adminInlet?.pendingHandshakes.store(handshakes.count, ordering: .relaxed)
    }

    /// The request arrived (or the connection is gone): its handshake deadline no longer applies.
    func handshakeDone(_ wsi: OpaquePointer) {
        if handshakes.remove(wsi) { publishPendingHandshakes() }
    }

    /// Hangs up on connections whose request did not arrive within the handshake timeout.
    func expireHandshakes() {
        guard handshakes.count > 0 else { return }
        let due = handshakes.expire(now: monotonicMicros())
        guard !due.isEmpty else { return }
        for wsi in due { lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC) }
        publishPendingHandshakes()
    }
}
