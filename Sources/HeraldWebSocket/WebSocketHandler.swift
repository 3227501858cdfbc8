/// What one WebSocket endpoint asks of its owner. Every method runs on the service thread.
public protocol WebSocketHandler: AnyObject {
    /// A WebSocket connection completed its handshake; `query` holds the URL's `key=value` pairs.
    func webSocketOpened(_ connection: WebSocketConnection, query: [(String, String)])
    /// One whole client message (fragments joined), within the endpoint's size limit.
    func webSocketReceived(_ connection: WebSocketConnection, message: [UInt8], binary: Bool)
    /// The connection can take one write.
    func webSocketWritable(_ connection: WebSocketConnection)
    func webSocketClosed(_ connection: WebSocketConnection)
    /// A client message went over the size limit; the connection is closing with 1009.
    func webSocketOversize(_ connection: WebSocketConnection)
    /// A connection was closed because its peer stopped answering pings.
    func webSocketTimedOut(_ connection: WebSocketConnection)
}

/// The server's owner: the main WebSocket endpoint, plus HTTP, wake-ups, the timer and what
/// happens before any endpoint has a connection. Every method runs on the service thread.
public protocol WebSocketServerDelegate: WebSocketHandler {
    /// An HTTP request; answer now with `request.respond`/`serveFile` or later with `respond`.
    func httpRequest(_ request: HTTPRequest)
    /// Another thread called `wakeUp()`: drain its inbox.
    func wokenUp()
    /// The timer set with `WebSocketServer.schedule(afterMicros:)` fired.
    func timerFired()
    /// An upgrade was refused before it completed.
    func webSocketRefused(_ refusal: WebSocketRefusal)
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
    public func webSocketOversize(_ connection: WebSocketConnection) {}
    public func webSocketTimedOut(_ connection: WebSocketConnection) {}
}

extension WebSocketServerDelegate {
    public func timerFired() {}
    public func webSocketRefused(_ refusal: WebSocketRefusal) {}
    public func webSocketIncompleteHandshake() {}
}

public struct WebSocketError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
