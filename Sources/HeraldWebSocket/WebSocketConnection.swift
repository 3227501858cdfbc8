import CWebSockets
import HeraldCore
import HeraldRuntime

/// One WebSocket client.
///
/// - Important: use only on the service thread, and only until `webSocketClosed`.
public final class WebSocketConnection {
    public let id: UInt64
    public let peer: String
    /// Owner's per-connection state.
    public var context: AnyObject?
    var wsi: OpaquePointer?
    var incoming: [UInt8] = []
    var incomingTooLarge = false
    /// The message being received came compressed (RSV1 on its first frame).
    var incomingCompressed = false
    /// The UTF-8 check of the plain text message being received, fed as its bytes arrive.
    var utf8 = UTF8Validator()
    /// The next receive callback starts a new frame (the last one ended its frame).
    var atFrameStart = true
    /// permessage-deflate as negotiated in the handshake, or nil: frames go out plain.
    public internal(set) var deflate: PerMessageDeflate?
    var closeCode: UInt16?
    var closeReason = ""
    /// The code of the peer's close frame, if it sent one first.
    var peerCloseCode: UInt16?
    /// A Server-Sent Events stream: its frames become SSE events (nil: a WebSocket).
    var eventStream: EventStreamEncoder?
    /// A stream's status line and headers are out (they wait for the first write, so that a
    /// stream refused while opening, such as for a bad token, gets an HTTP error instead).
    var streamStarted = false
    var heartbeatDue = false
    /// A keep-alive ping waits for the next writable call.
    var pingDue = false
    /// The allowed Origin a stream came from, echoed in its CORS header.
    var streamOrigin: String?
    /// What the front's screening attached when it admitted the connection (the connect
    /// proxy's answer), or nil.
    public internal(set) var attachment: [UInt8]?
    /// When the peer last sent anything (a message or a pong), monotonic ms.
    var lastHeard = monotonicMillis()
    /// The endpoint's handler, which hears every event of this connection, and its size limit.
    let handler: WebSocketHandler
    let maxMessageBytes: Int

    init(id: UInt64, wsi: OpaquePointer?, peer: String, handler: WebSocketHandler, maxMessageBytes: Int) {
        self.id = id
        self.wsi = wsi
        self.peer = peer
        self.handler = handler
        self.maxMessageBytes = maxMessageBytes
    }

    public var isOpen: Bool { wsi != nil && closeCode == nil }

    /// A Server-Sent Events stream rather than a WebSocket.
    public var isEventStream: Bool { eventStream != nil }

    /// How the connection ended: the code this side closed with, else the peer's, else 1006
    /// (no close frame: the socket dropped).
    public var closedWith: UInt16 { closeCode ?? peerCloseCode ?? 1006 }

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
        guard let wsi, closeCode == nil, server != nil, eventStream == nil || streamStarted else { return false }
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
    func close(code: UInt16, reason: String, graceSeconds: Int32, afterIncomingMessage: Bool) {
        guard let wsi, closeCode == nil else { return }
        closeCode = code
        closeReason = reason
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, graceSeconds)
        if !afterIncomingMessage { requestWritable() }
    }

    /// Set while the connection is open, cleared when it closes.
    var server: WebSocketServer?

    /// Writes `frames` as one text message, separated by newlines. Call from `webSocketWritable`,
    /// or anywhere on the service thread while `canWriteNow`.
    /// `pieces` holds each frame's shared compressed piece (or nil), used when the connection
    /// negotiated permessage-deflate.
    @discardableResult
    public func write(frames: [[UInt8]], pieces: [[UInt8]?] = []) -> Bool {
        guard let wsi, let server else { return false }
        if eventStream != nil { return server.writeEvents(wsi, self, frames: frames) }
        if let deflate { return server.writeCompressed(wsi, frames: frames, pieces: pieces, window: deflate.serverWindowBits) }
        return server.writeText(wsi, frames: frames)
    }

    /// Writes one message as it is, text or binary. Same rules as `write(frames:)`.
    @discardableResult
    public func write(message: [UInt8], binary: Bool) -> Bool {
        guard let wsi, let server else { return false }
        if let deflate { return server.writeCompressed(wsi, message: message, binary: binary, window: deflate.serverWindowBits) }
        return server.write(wsi, message: message, binary: binary)
    }

    /// The connection stored in a wsi's per-session slot, or nil.
    static func from(_ user: UnsafeMutableRawPointer?) -> WebSocketConnection? {
        guard let user, let raw = user.load(as: UnsafeMutableRawPointer?.self) else { return nil }
        return Unmanaged<WebSocketConnection>.fromOpaque(raw).takeUnretainedValue()
    }
}
