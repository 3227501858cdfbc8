import CWebSockets
import HeraldCore
import HeraldRuntime

/// Accepting without lws's sorted timeout list: the acceptor thread hands over sockets, the
/// service thread adopts them with their lws pending timeout taken off (an O(1) removal, where
/// leaving it costs the next insertion a walk past every connection still in its handshake),
/// and `handshakes`, a FIFO since every deadline is the same span away, times them out.
extension WebSocketServer {
    /// Service thread: adopts the sockets the front handed this thread since the last wake-up
    /// (with the request it read from them), and serves the requests it read.
    func adoptAccepted() {
        guard let ctx = loop.context else { return }
        for (inlet, admin) in [(inlet, false), (adminInlet, true)] {
            guard let inlet else { continue }
            for _ in 0..<inlet.incomplete.exchange(0, ordering: .relaxed) { delegate?.webSocketIncompleteHandshake() }
            let arrivals = inlet.take()
            guard !arrivals.isEmpty else { continue }
            let deadline = monotonicMicros() + UInt64(max(1, options.handshakeTimeoutSeconds)) * 1_000_000
            for arrival in arrivals {
                switch arrival {
                case let .socket(fd, bytes, attachment):
                    // lws reads `bytes` (the whole request) before the socket. On failure it
                    // closes the socket itself.
                    // lws may reach ESTABLISHED inside the adopt call: the attachment is taken by
                    // the wsi it instantiates (SERVER_NEW_CLIENT_INSTANTIATED) before that.
                    adopting = attachment
                    let adopted = bytes.withUnsafeBytes { raw in
                        lws_adopt_socket_readbuf(ctx, fd, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count)
                    }
                    adopting = nil
                    guard let wsi = adopted else { continue }
                    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0)
                    // Already past its request unless lws is still waiting for it.
                    if awaitingRequest.contains(wsi) { handshakes.set(wsi, deadline: deadline) }
                case let .request(request):
                    serveFrontRequest(request, admin: admin)
                }
            }
        }
        publishPendingHandshakes()
    }

    /// A request the front read whole: to the delegate, its answer back to the front.
    private func serveFrontRequest(_ r: Acceptor.Request, admin: Bool) {
        delegate?.httpRequest(r.httpRequest(admin: admin, trustedProxies: options.trustedProxies))
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
