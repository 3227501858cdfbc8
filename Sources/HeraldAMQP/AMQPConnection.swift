import CRabbitMQ
#if canImport(Glibc)
import Glibc
#endif

/// One rabbitmq-c connection with one channel (channel 1).
///
/// - Important: confined to one thread (rabbitmq-c connections are not thread-safe). Heartbeats
///   are only serviced while this thread waits for frames, so it must call `nextEvent` more often
///   than every heartbeat/2. After any thrown error the connection is unusable: `close()` it
///   and connect a new one.
public final class AMQPConnection {
    public let endpoint: AMQPEndpoint
    public let heartbeatSeconds: Int32
    private var state: amqp_connection_state_t?
    let channel: amqp_channel_t = 1
    private var pending: [AMQPEvent] = []
    private var nextPublishTag: UInt64 = 1
    private var confirming = false
    /// Publishes not yet confirmed, by delivery tag.
    private var unconfirmed: Set<UInt64> = []
    private var refusedTags: Set<UInt64> = []

    public init(endpoint: AMQPEndpoint, heartbeatSeconds: Int32 = 10) {
        self.endpoint = endpoint
        self.heartbeatSeconds = heartbeatSeconds
    }

    deinit { close() }

    public var isOpen: Bool { state != nil }

    /// The longest a synchronous AMQP method (declare, consume, close) may wait for its reply.
    public static let rpcTimeoutSeconds = 10

    public func connect(timeoutMillis: Int = 3_000) throws(AMQPError) {
        close()
        guard let conn = amqp_new_connection() else { throw AMQPError("cannot allocate an AMQP connection") }
        guard let socket = amqp_tcp_socket_new(conn) else {
            amqp_destroy_connection(conn)
            throw AMQPError("cannot create a TCP socket for AMQP")
        }
        var tv = timeval(tv_sec: timeoutMillis / 1000, tv_usec: (timeoutMillis % 1000) * 1000)
        let status = amqp_socket_open_noblock(socket, endpoint.host, endpoint.port, &tv)
        if status != AMQP_STATUS_OK.rawValue {
            amqp_destroy_connection(conn)
            throw AMQPError("cannot connect to RabbitMQ at \(endpoint.host):\(endpoint.port): \(AMQPCodec.statusString(status))")
        }
        state = conn
        // Without these, a login or an RPC to a broker that stopped answering (a black-holed
        // link: no FIN, no RST) would wait forever; heartbeats only cover waiting for frames.
        _ = amqp_set_handshake_timeout(conn, &tv)
        var rpc = timeval(tv_sec: Self.rpcTimeoutSeconds, tv_usec: 0)
        _ = amqp_set_rpc_timeout(conn, &rpc)
        let login = herald_amqp_login_plain(conn, endpoint.vhost, 0, 131_072, heartbeatSeconds, endpoint.user, endpoint.password)
        do {
            try check(login, "login")
            _ = amqp_channel_open(conn, channel)
            try check(amqp_get_rpc_reply(conn), "channel.open")
        } catch {
            close()
            throw error
        }
        pending = []
        nextPublishTag = 1
        confirming = false
        unconfirmed = []
        refusedTags = []
    }

    public func close() {
        guard let conn = state else { return }
        state = nil
        _ = amqp_channel_close(conn, channel, Int32(AMQP_REPLY_SUCCESS))
        _ = amqp_connection_close(conn, Int32(AMQP_REPLY_SUCCESS))
        amqp_destroy_connection(conn)
    }

    /// Drops the connection without the close handshake (the broker is gone or broken).
    public func abandon() {
        guard let conn = state else { return }
        state = nil
        amqp_destroy_connection(conn)
    }

    func conn() throws(AMQPError) -> amqp_connection_state_t {
        guard let state else { throw AMQPError("AMQP connection is closed") }
        return state
    }

    public func qos(prefetch: UInt16) throws(AMQPError) {
        let c = try conn()
        _ = amqp_basic_qos(c, channel, 0, prefetch, 0)
        try check(amqp_get_rpc_reply(c), "basic.qos")
    }

    /// `noAck`: RabbitMQ considers each delivery handled once sent (required for direct reply-to,
    /// `amq.rabbitmq.reply-to`).
    public func consume(queue: String, exclusive: Bool = false, noAck: Bool = false, arguments: [(String, AMQPArgument)] = []) throws(AMQPError) {
        let c = try conn()
        AMQPCodec.withTable(arguments) { table in
            queue.withCString { q in
                _ = amqp_basic_consume(c, channel, amqp_cstring_bytes(q), amqp_empty_bytes, 0, noAck ? 1 : 0, exclusive ? 1 : 0, table)
            }
        }
        try check(amqp_get_rpc_reply(c), "basic.consume \(queue)")
    }

    /// Turns on publisher confirms for this channel.
    public func confirmSelect() throws(AMQPError) {
        let c = try conn()
        _ = amqp_confirm_select(c, channel)
        try check(amqp_get_rpc_reply(c), "confirm.select")
        confirming = true
    }

    // MARK: Publishing and acking

    /// Publishes one message. With confirms on, returns its delivery tag for `waitForConfirms`.
    @discardableResult
    public func publish(exchange: String, routingKey: String, body: [UInt8], properties: AMQPProperties = .init(),
                        mandatory: Bool = false) throws(AMQPError) -> UInt64 {
        let c = try conn()
        var status: Int32 = 0
        var cStrings: [UnsafeMutablePointer<CChar>] = []
        defer { cStrings.forEach { free($0) } }
        func bytes(_ s: String) -> amqp_bytes_t {
            let p = strdup(s)!
            cStrings.append(p)
            return amqp_cstring_bytes(p)
        }
        var props = amqp_basic_properties_t()
        var flags: UInt32 = 0
        if let ct = properties.contentType { props.content_type = bytes(ct); flags |= UInt32(AMQP_BASIC_CONTENT_TYPE_FLAG) }
        if let id = properties.messageID { props.message_id = bytes(id); flags |= UInt32(AMQP_BASIC_MESSAGE_ID_FLAG) }
        if properties.persistent { props.delivery_mode = 2; flags |= UInt32(AMQP_BASIC_DELIVERY_MODE_FLAG) }
        if let r = properties.replyTo { props.reply_to = bytes(r); flags |= UInt32(AMQP_BASIC_REPLY_TO_FLAG) }
        if let c = properties.correlationID { props.correlation_id = bytes(c); flags |= UInt32(AMQP_BASIC_CORRELATION_ID_FLAG) }
        if let e = properties.expiration { props.expiration = bytes(e); flags |= UInt32(AMQP_BASIC_EXPIRATION_FLAG) }
        let headerArgs = properties.headers.map { ($0.0, AMQPArgument.string($0.1)) }
        AMQPCodec.withTable(headerArgs) { table in
            if !headerArgs.isEmpty { props.headers = table; flags |= UInt32(AMQP_BASIC_HEADERS_FLAG) }
            props._flags = flags
            exchange.withCString { e in
                routingKey.withCString { r in
                    body.withUnsafeBufferPointer { b in
                        let payload = amqp_bytes_t(len: b.count, bytes: UnsafeMutableRawPointer(mutating: b.baseAddress))
                        status = amqp_basic_publish(c, channel, amqp_cstring_bytes(e), amqp_cstring_bytes(r),
                                                    mandatory ? 1 : 0, 0, &props, payload)
                    }
                }
            }
        }
        if status != AMQP_STATUS_OK.rawValue {
            throw AMQPError("basic.publish failed: \(AMQPCodec.statusString(status))")
        }
        let tag = nextPublishTag
        nextPublishTag += 1
        if confirming { unconfirmed.insert(tag) }
        return tag
    }

    public func ack(_ tag: UInt64, multiple: Bool) throws(AMQPError) {
        let c = try conn()
        let status = amqp_basic_ack(c, channel, tag, multiple ? 1 : 0)
        if status != AMQP_STATUS_OK.rawValue { throw AMQPError("basic.ack failed: \(AMQPCodec.statusString(status))") }
    }

    /// Rejects deliveries so RabbitMQ delivers them again (to this or another consumer).
    public func nack(_ tag: UInt64, multiple: Bool, requeue: Bool = true) throws(AMQPError) {
        let c = try conn()
        let status = amqp_basic_nack(c, channel, tag, multiple ? 1 : 0, requeue ? 1 : 0)
        if status != AMQP_STATUS_OK.rawValue { throw AMQPError("basic.nack failed: \(AMQPCodec.statusString(status))") }
    }

    /// The tag of the newest publish so far (0 before the first).
    public var lastPublishTag: UInt64 { nextPublishTag - 1 }

    /// Every publish up to this tag is settled: confirmed, or refused (see `waitForConfirms`).
    public var settledThrough: UInt64 { unconfirmed.min().map { $0 - 1 } ?? lastPublishTag }

    /// Tags the broker refused (nack) since the last call, which clears them.
    public func takeRefused() -> Set<UInt64> {
        defer { refusedTags = [] }
        return refusedTags
    }

    /// Waits until every publish up to `tag` (default: every publish so far) is settled.
    /// Deliveries that arrive meanwhile are kept for `nextEvent`. Returns the tags the broker
    /// refused (nack); throws on timeout.
    public func waitForConfirms(through tag: UInt64? = nil, timeoutMillis: Int) throws(AMQPError) -> Set<UInt64> {
        let target = tag ?? lastPublishTag
        var waited = 0
        while settledThrough < target {
            let event = try readEvent(timeoutMillis: 100)
            switch event {
            case .timeout:
                waited += 100
                if waited >= timeoutMillis { throw AMQPError("no publisher confirm within \(timeoutMillis) ms") }
            case .delivery, .returned, .blocked, .unblocked:
                pending.append(event)
            case .confirm:
                break
            }
        }
        return takeRefused()
    }

    /// The next delivery or confirm, waiting at most `timeoutMillis` (0: do not block).
    public func nextEvent(timeoutMillis: Int) throws(AMQPError) -> AMQPEvent {
        if !pending.isEmpty { return pending.removeFirst() }
        return try readEvent(timeoutMillis: timeoutMillis)
    }

    /// True when a frame can be read without blocking (batching: keep reading while true).
    public var hasBufferedData: Bool {
        guard let c = state else { return false }
        return !pending.isEmpty || amqp_frames_enqueued(c) != 0 || amqp_data_in_buffer(c) != 0
    }

    func readEvent(timeoutMillis: Int) throws(AMQPError) -> AMQPEvent {
        let c = try conn()
        amqp_maybe_release_buffers(c)
        var frame = amqp_frame_t()
        var tv = timeval(tv_sec: timeoutMillis / 1000, tv_usec: (timeoutMillis % 1000) * 1000)
        let status = amqp_simple_wait_frame_noblock(c, &frame, &tv)
        if status == AMQP_STATUS_TIMEOUT.rawValue { return .timeout }
        if status != AMQP_STATUS_OK.rawValue {
            throw AMQPError("AMQP connection lost: \(AMQPCodec.statusString(status))")
        }
        guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { return .timeout }
        let method = frame.payload.method
        switch method.id {
        case AMQP_BASIC_DELIVER_METHOD:
            let d = method.decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            let tag = d.delivery_tag
            let exchange = AMQPCodec.string(d.exchange)
            let routingKey = AMQPCodec.string(d.routing_key)
            let redelivered = d.redelivered != 0
            var message = amqp_message_t()
            let reply = amqp_read_message(c, frame.channel, &message, 0)
            try check(reply, "reading a delivery")
            defer { amqp_destroy_message(&message) }
            let body = AMQPCodec.bytes(message.body)
            return .delivery(AMQPDelivery(tag: tag, exchange: exchange, routingKey: routingKey,
                                          redelivered: redelivered, properties: AMQPCodec.properties(message.properties),
                                          body: body))
        case AMQP_BASIC_ACK_METHOD:
            let a = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            settle(a.delivery_tag, multiple: a.multiple != 0, ok: true)
            return .confirm(tag: a.delivery_tag, multiple: a.multiple != 0, ok: true)
        case AMQP_BASIC_NACK_METHOD:
            let n = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            settle(n.delivery_tag, multiple: n.multiple != 0, ok: false)
            return .confirm(tag: n.delivery_tag, multiple: n.multiple != 0, ok: false)
        case AMQP_BASIC_RETURN_METHOD:
            let r = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            let code = Int(r.reply_code), text = AMQPCodec.string(r.reply_text)
            let exchange = AMQPCodec.string(r.exchange), routingKey = AMQPCodec.string(r.routing_key)
            var message = amqp_message_t()
            let reply = amqp_read_message(c, frame.channel, &message, 0)
            try check(reply, "reading a returned message")
            defer { amqp_destroy_message(&message) }
            return .returned(AMQPReturn(replyCode: code, replyText: text, exchange: exchange, routingKey: routingKey,
                                        properties: AMQPCodec.properties(message.properties)))
        case AMQP_CONNECTION_BLOCKED_METHOD:
            let b = method.decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee
            return .blocked(reason: AMQPCodec.string(b.reason))
        case AMQP_CONNECTION_UNBLOCKED_METHOD:
            return .unblocked
        case AMQP_CHANNEL_CLOSE_METHOD:
            let m = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            var ok = amqp_channel_close_ok_t()
            _ = amqp_send_method(c, frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)
            throw AMQPError("RabbitMQ closed the channel: \(m.reply_code) \(AMQPCodec.string(m.reply_text))", replyCode: Int(m.reply_code))
        case AMQP_CONNECTION_CLOSE_METHOD:
            let m = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var ok = amqp_connection_close_ok_t()
            _ = amqp_send_method(c, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok)
            throw AMQPError("RabbitMQ closed the connection: \(m.reply_code) \(AMQPCodec.string(m.reply_text))", replyCode: Int(m.reply_code))
        case AMQP_BASIC_CANCEL_METHOD:
            throw AMQPError("RabbitMQ cancelled the consumer (queue deleted?)")
        default:
            return .timeout
        }
    }

    private func settle(_ tag: UInt64, multiple: Bool, ok: Bool) {
        let tags = multiple ? unconfirmed.filter { $0 <= tag } : (unconfirmed.contains(tag) ? [tag] : [])
        for t in tags {
            unconfirmed.remove(t)
            if !ok { refusedTags.insert(t) }
        }
    }

    // MARK: Helpers

    func check(_ reply: amqp_rpc_reply_t, _ what: String) throws(AMQPError) {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            throw AMQPError("\(what) failed: \(AMQPCodec.statusString(reply.library_error))")
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD {
                let m = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                throw AMQPError("\(what) failed: connection closed by RabbitMQ: \(m.reply_code) \(AMQPCodec.string(m.reply_text))",
                                replyCode: Int(m.reply_code))
            }
            if reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD {
                let m = reply.reply.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                if let c = state {
                    var ok = amqp_channel_close_ok_t()
                    _ = amqp_send_method(c, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)
                }
                throw AMQPError("\(what) failed: channel closed by RabbitMQ: \(m.reply_code) \(AMQPCodec.string(m.reply_text))",
                                replyCode: Int(m.reply_code))
            }
            throw AMQPError("\(what) failed: server exception \(reply.reply.id)")
        default:
            throw AMQPError("\(what) failed: no reply")
        }
    }

    /// Re-opens channel 1 after the broker closed it (for example a refused exclusive consume).
    public func reopenChannel() throws(AMQPError) {
        let c = try conn()
        _ = amqp_channel_open(c, channel)
        try check(amqp_get_rpc_reply(c), "channel.open")
        confirming = false
        unconfirmed = []
        nextPublishTag = 1
    }
}
