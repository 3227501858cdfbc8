import HeraldWebSocket

/// Test only (`--test-echo-path`, for protocol conformance runs such as kosoku): a WebSocket
/// endpoint that sends every message back as it came, text or binary, in order. It runs on the
/// server's own frame handling (fragments, limits, close, ping) but none of Herald's protocol.
///
/// - Important: service thread only, like every `WebSocketHandler`.
final class EchoEndpoint: WebSocketHandler {
    /// Messages 16 MiB and below come back; conformance suites send up to that.
    static let maxMessageBytes = 16 << 20

    private var pending: [UInt64: [(message: [UInt8], binary: Bool)]] = [:]

    func webSocketOpened(_ connection: WebSocketConnection, query: [(String, String)]) {
        pending[connection.id] = []
    }

    func webSocketReceived(_ connection: WebSocketConnection, message: [UInt8], binary: Bool) {
        pending[connection.id, default: []].append((message, binary))
        connection.requestWritable()
    }

    func webSocketWritable(_ connection: WebSocketConnection) {
        guard var queue = pending[connection.id], !queue.isEmpty else { return }
        let next = queue.removeFirst()
        pending[connection.id] = queue
        guard connection.write(message: next.message, binary: next.binary) else {
            return connection.close(code: 1011, reason: "write failed")
        }
        if !queue.isEmpty { connection.requestWritable() }
    }

    func webSocketClosed(_ connection: WebSocketConnection) {
        pending.removeValue(forKey: connection.id)
    }
}
