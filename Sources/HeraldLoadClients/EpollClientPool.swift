import CSocket
import HeraldDeflate
import HeraldRuntime
#if canImport(Glibc)
import Glibc
#endif

/// The load generator's WebSocket clients without libwebsockets: an RFC 6455 client (text and
/// binary messages, fragments, ping → pong, close) on one epoll loop.
///
/// Why not lws's client: lws 4.1 parses a frame's payload one byte at a time, which made the
/// generator, not the server, the bottleneck of every fan-out run on a shared 2-core machine.
/// Here a frame's payload is located by its length and handed over in one copy.
///
/// Only what a benchmark client needs: `ws://` to IPv4 or IPv6 hosts (`ws://[::1]:8080/ws`; names resolved once),
/// permessage-deflate when asked (`offerDeflate`: messages with RSV1 are inflated, each on its
/// own, as with `server_no_context_takeover`), and the only data a client sends is `sendText` (the RPC preset's calls). An `http://` target is a Server-Sent
/// Events stream instead: each event's `data:` line is handed over as one message.
///
/// - Important: `connect`, `drop` and `openCount` on the service thread (from a handler method);
///   `wakeUp` and `requestStop` from any thread.
public final class EpollClientPool: ClientPool {
    private enum Phase { case connecting, handshaking, open }

    private final class Connection {
        let id: Int
        let fd: Int32
        let key: UInt64
        var phase = Phase.connecting
        var request: [UInt8]
        var pendingOut: [UInt8] = []
        var input: [UInt8] = []
        var fragments: [UInt8]?
        /// The message being received came compressed (RSV1 on its first frame).
        var compressed = false
        var closeCode: UInt16?
        let startedMillis: UInt64
        let eventStream: Bool
        init(id: Int, fd: Int32, key: UInt64, request: [UInt8], startedMillis: UInt64, eventStream: Bool) {
            self.eventStream = eventStream
            self.id = id
            self.fd = fd
            self.key = key
            self.request = request
            self.startedMillis = startedMillis
        }
    }

    private weak var handler: WebSocketClientHandler?
    private let maxConnections: Int
    private var epoll: Int32 = -1
    private var wakeFD: Int32 = -1
    private let stopFlag = StopFlag()
    private var byID: [Int: Connection] = [:]
    private var byKey: [UInt64: Connection] = [:]
    private var nextKey: UInt64 = 1
    /// Closes reported after the current dispatch, so a handler never re-enters itself.
    private var closedLater: [(id: Int, code: UInt16?, error: String?)] = []
    private var addresses: [String: [UInt8]] = [:]
    private var readBuffer = [UInt8](repeating: 0, count: 256 * 1024)
    private static let handshakeTimeoutMillis: UInt64 = 30_000
    /// RFC 6455's sample key and the accept value a server must answer it with.
    private static let key = "dGhlIHNhbXBsZSBub25jZQ=="
    private static let accept = Array("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".utf8)
    private static let extensionsHeader = Array("\r\nsec-websocket-extensions: permessage-deflate".utf8)

    /// Pause between reading rounds (µs); every latency it measures may include up to this.
    private let roundMicros: UInt32
    /// Offer permessage-deflate in every handshake.
    private let offerDeflate: Bool
    private lazy var inflater = Inflater()
    /// Bytes read from open WebSocket connections (frame headers and payloads, as they came
    /// over the wire), and the connections whose server agreed to compress. Service thread.
    public private(set) var receivedBytes: UInt64 = 0
    public private(set) var compressedConnections = 0

    public init(maxConnections: Int, roundMicros: UInt32 = 0, offerDeflate: Bool = false, handler: WebSocketClientHandler) {
        self.maxConnections = maxConnections
        self.roundMicros = roundMicros
        self.offerDeflate = offerDeflate
        self.handler = handler
    }

    deinit {
        for c in byID.values { Glibc.close(c.fd) }
        if epoll >= 0 { Glibc.close(epoll) }
        if wakeFD >= 0 { Glibc.close(wakeFD) }
    }

    public func start() throws(ClientError) {
        try checkDescriptorLimit(connections: maxConnections)
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = herald_eventfd()
        guard epoll >= 0, wakeFD >= 0, herald_epoll_set(epoll, 1, wakeFD, herald_epollin, 0) == 0 else {
            throw ClientError(OSError.describe("cannot create the client epoll loop"))
        }
    }

    public var openCount: Int { byID.count }

    public func wakeUp() {
        guard wakeFD >= 0 else { return }
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    public func requestStop() {
        stopFlag.set()
        wakeUp()
    }

    public func run() {
        var keys = [UInt64](repeating: 0, count: 512)
        var events = [UInt32](repeating: 0, count: 512)
        var lastSweep = monotonicMillis()
        while !stopFlag.isSet {
            reportClosed()
            let n = herald_epoll_wait(epoll, &keys, &events, 512, closedLater.isEmpty ? 200 : 0)
            for i in 0..<Int(max(n, 0)) {
                if keys[i] == 0 {
                    var value: UInt64 = 0
                    _ = Glibc.read(wakeFD, &value, 8)
                    handler?.clientPoolWokenUp()
                } else if let c = byKey[keys[i]] {
                    service(c, events: events[i])
                }
            }
            // Read in rounds at most every `roundMicros`: on a machine the server shares, waking
            // for every few ready sockets makes the server pay a wake-up on each send.
            if roundMicros > 0 && n > 0 && n < 512 { usleep(roundMicros) }
            let now = monotonicMillis()
            if now - lastSweep >= 1_000 {
                lastSweep = now
                for c in Array(byID.values) where c.phase != .open && now - c.startedMillis > Self.handshakeTimeoutMillis {
                    finish(c, code: nil, error: "timed out connecting")
                }
            }
        }
        for c in Array(byID.values) { finish(c, code: nil, error: nil) }
        reportClosed()
    }

    public func connect(_ id: Int, to target: WebSocketClientPool.Target, origin: String? = nil) {
        if let old = byID[id] { finish(old, code: nil, error: nil) }
        guard let address = resolve(target.host, port: target.port) else {
            closedLater.append((id, nil, "cannot resolve \(target.host)"))
            return
        }
        let fd = address.withUnsafeBytes { herald_tcp_connect_to($0.baseAddress, Int32($0.count)) }
        guard fd >= 0 else {
            closedLater.append((id, nil, OSError.describe("connect")))
            return
        }
        _ = herald_set_nodelay(fd)
        let request = target.eventStream
            ? "GET \(target.path) HTTP/1.1\r\nHost: \(target.authority)\r\nAccept: text/event-stream\r\n"
                + "Origin: \(origin ?? "http://\(target.hostInURL)")\r\n\r\n"
            : "GET \(target.path) HTTP/1.1\r\nHost: \(target.authority)\r\nUpgrade: websocket\r\n"
                + "Connection: Upgrade\r\nSec-WebSocket-Key: \(Self.key)\r\nSec-WebSocket-Version: 13\r\n"
                + (offerDeflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "")
                + "Origin: \(origin ?? "http://\(target.hostInURL)")\r\n\r\n"
        let key = nextKey
        nextKey += 1
        let c = Connection(id: id, fd: fd, key: key, request: Array(request.utf8), startedMillis: monotonicMillis(),
                           eventStream: target.eventStream)
        byID[id] = c
        byKey[key] = c
        if herald_epoll_set(epoll, 1, fd, herald_epollout, key) != 0 {
            finish(c, code: nil, error: OSError.describe("epoll"))
        }
    }

    public func drop(_ id: Int) {
        guard let c = byID[id] else { return }
        finish(c, code: nil, error: nil)
    }

    // MARK: Service

    private func service(_ c: Connection, events: UInt32) {
        switch c.phase {
        case .connecting:
            let error = herald_socket_error(c.fd)
            if error != 0 || events & (herald_epollerr | herald_epollhup) != 0 {
                return finish(c, code: nil, error: "connect: \(String(cString: strerror(error > 0 ? error : ECONNREFUSED)))")
            }
            c.phase = .handshaking
            c.pendingOut = c.request
            c.request = []
            flush(c) // then waits for the response (EPOLLIN)
        case .handshaking, .open:
            if events & herald_epollout != 0 { flush(c) }
            if events & (herald_epollin | herald_epollerr | herald_epollhup) != 0 { receive(c) }
        }
    }

    private func receive(_ c: Connection) {
        let n = readBuffer.withUnsafeMutableBytes { Glibc.recv(c.fd, $0.baseAddress, $0.count, 0) }
        if n == 0 { return finish(c, code: c.closeCode, error: c.phase == .open ? nil : "closed during the handshake") }
        if n < 0 {
            if OSError.isTransient { return }
            return finish(c, code: c.closeCode, error: c.phase == .open ? nil : OSError.reason)
        }
        c.input.append(contentsOf: readBuffer[0..<n])
        if c.phase == .open && !c.eventStream { receivedBytes += UInt64(n) }
        if c.phase == .handshaking && !handshake(c) { return }
        if c.phase == .open { if c.eventStream { parseEvents(c) } else { parseFrames(c) } }
    }

    /// Reads the 101 response (200 for an event stream); false while it is incomplete or when
    /// the connection ended.
    private func handshake(_ c: Connection) -> Bool {
        guard let end = ClientFrame.find([0x0D, 0x0A, 0x0D, 0x0A], in: c.input) else {
            if c.input.count > 16_384 { finish(c, code: nil, error: "handshake response too long") }
            return false
        }
        let head = Array(c.input[0..<end])
        let statusLine = String(decoding: head.prefix { $0 != 0x0D }, as: UTF8.self)
        let problem: String? = c.eventStream
            ? (statusLine.hasPrefix("HTTP/1.1 200") ? nil : "stream refused: \(statusLine)")
            : !statusLine.hasPrefix("HTTP/1.1 101") ? "handshake failed: \(statusLine)"
            : ClientFrame.find(Self.accept, in: head) == nil ? "handshake failed: wrong Sec-WebSocket-Accept" : nil
        if let problem {
            finish(c, code: nil, error: problem)
            return false
        }
        c.input.removeFirst(end + 4)
        if !c.eventStream { receivedBytes += UInt64(c.input.count) }
        if ClientFrame.find(Self.extensionsHeader, in: head.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }) != nil { compressedConnections += 1 }
        c.phase = .open
        handler?.clientOpened(c.id)
        return byKey[c.key] != nil
    }

    private func parseFrames(_ c: Connection) {
        var pos = 0
        let bytes = c.input
        let count = bytes.count
        while count - pos >= 2 {
            let b0 = bytes[pos], b1 = bytes[pos + 1]
            let fin = b0 & 0x80 != 0, opcode = b0 & 0x0F, masked = b1 & 0x80 != 0, rsv1 = b0 & 0x40 != 0
            var length = Int(b1 & 0x7F)
            var header = 2
            if length == 126 {
                guard count - pos >= 4 else { break }
                length = Int(bytes[pos + 2]) << 8 | Int(bytes[pos + 3])
                header = 4
            } else if length == 127 {
                guard count - pos >= 10 else { break }
                length = 0
                for i in 2..<10 { length = length << 8 | Int(bytes[pos + i]) }
                header = 10
            }
            let maskAt = pos + header
            if masked { header += 4 }
            guard length >= 0, length <= 64 << 20 else { return finish(c, code: nil, error: "frame too large") }
            guard count - pos >= header + length else { break }
            var payload = Array(bytes[(pos + header)..<(pos + header + length)])
            if masked {
                for i in 0..<payload.count { payload[i] ^= bytes[maskAt + i % 4] }
            }
            pos += header + length
            switch opcode {
            case 0x1, 0x2:
                c.compressed = rsv1
                if fin && c.fragments == nil {
                    guard let message = inflated(c, payload) else { return }
                    handler?.clientReceived(c.id, message: message)
                } else {
                    c.fragments = payload
                }
            case 0x0:
                c.fragments?.append(contentsOf: payload)
                if fin, let whole = c.fragments {
                    c.fragments = nil
                    guard let message = inflated(c, whole) else { return }
                    handler?.clientReceived(c.id, message: message)
                }
            case 0x8:
                let code = payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil
                c.closeCode = code
                sendControl(c, opcode: 0x8, payload: Array(payload.prefix(2)))
                return finish(c, code: code, error: nil)
            case 0x9:
                sendControl(c, opcode: 0xA, payload: payload)
            default:
                break // pong, or reserved: ignored
            }
            if byKey[c.key] == nil { return } // a handler dropped it
        }
        if pos > 0 { c.input.removeFirst(pos) }
    }

    /// A received message as sent: inflated when it came compressed. nil: it could not be (the
    /// connection is finished with an error).
    ///
    /// A server that compresses once per message sends every client the same bytes: the
    /// generator, which shares the machine with the server it measures, inflates each distinct
    /// body once and compares every other copy byte for byte with it instead of inflating it
    /// again (a client that got different bytes is inflated on its own).
    private func inflated(_ c: Connection, _ payload: [UInt8]) -> [UInt8]? {
        guard c.compressed else { return payload }
        if payload == lastCompressed { return lastInflated }
        guard let inflater else { finish(c, code: nil, error: "cannot inflate"); return nil }
        switch inflater.inflate(payload, cap: 64 << 20) {
        case let .success(message):
            lastCompressed = payload
            lastInflated = message
            return message
        case .failure: finish(c, code: nil, error: "a compressed message did not inflate"); return nil
        }
    }
    private var lastCompressed: [UInt8] = []
    private var lastInflated: [UInt8] = []

    /// Server-Sent Events: every complete event (ending in a blank line) with a `data:` line is
    /// one message; a `close` event's code is kept for the close that follows.
    private func parseEvents(_ c: Connection) {
        var pos = 0
        let bytes = c.input
        while let end = ClientFrame.find([0x0A, 0x0A], in: bytes, from: pos) {
            var line = pos
            while line < end {
                let next = bytes[line..<end].firstIndex(of: 0x0A) ?? end
                if next - line > 6, bytes[line..<(line + 6)].elementsEqual(Self.dataPrefix) {
                    let data = Array(bytes[(line + 6)..<next])
                    if let code = Self.closeCode(data) { c.closeCode = code } else { handler?.clientReceived(c.id, message: data) }
                    if byKey[c.key] == nil { return }
                }
                line = next + 1
            }
            pos = end + 2
        }
        if pos > 0 { c.input.removeFirst(pos) }
    }

    private static let dataPrefix = Array("data: ".utf8)
    private static let closePrefix = Array(#"{"type":"close","code":"#.utf8)

    private static func closeCode(_ data: [UInt8]) -> UInt16? {
        guard data.count > closePrefix.count, data.prefix(closePrefix.count).elementsEqual(closePrefix) else { return nil }
        return UInt16(String(decoding: data[closePrefix.count...].prefix { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self))
    }

    /// Sends one masked text message to client `id` (if it is open). Service thread.
    public func sendText(_ id: Int, _ payload: [UInt8]) {
        guard let c = byID[id], c.phase == .open else { return }
        c.pendingOut += ClientFrame.masked(opcode: 0x1, payload: payload, mask: [0x5A, 0x13, 0xC4, 0x7E])
        flush(c)
    }

    /// A masked control frame (a client must mask everything it sends).
    private func sendControl(_ c: Connection, opcode: UInt8, payload: [UInt8]) {
        c.pendingOut += ClientFrame.masked(opcode: opcode, payload: payload.prefix(125), mask: [0x37, 0xFA, 0x21, 0x3D])
        flush(c)
    }

    private func flush(_ c: Connection) {
        while !c.pendingOut.isEmpty {
            let n = c.pendingOut.withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { c.pendingOut.removeFirst(n); continue }
            if n < 0 && OSError.isTransient {
                _ = herald_epoll_set(epoll, 0, c.fd, herald_epollin | herald_epollout, c.key)
                return
            }
            return finish(c, code: nil, error: OSError.reason)
        }
        if c.phase != .connecting { _ = herald_epoll_set(epoll, 0, c.fd, herald_epollin, c.key) }
    }

    private func finish(_ c: Connection, code: UInt16?, error: String?) {
        guard byKey.removeValue(forKey: c.key) != nil else { return }
        if byID[c.id] === c { byID[c.id] = nil }
        Glibc.close(c.fd) // also leaves the epoll set
        closedLater.append((c.id, code, error))
    }

    private func reportClosed() {
        while !closedLater.isEmpty {
            let batch = closedLater
            closedLater = []
            for (id, code, error) in batch { handler?.clientClosed(id, code: code, error: error) }
        }
    }

    /// The host's address (IPv4 or IPv6) as a sockaddr, resolved once per host and port.
    private func resolve(_ host: String, port: Int32) -> [UInt8]? {
        let key = "\(host) \(port)"
        if let known = addresses[key] { return known }
        var storage = [UInt8](repeating: 0, count: 128)
        let length = storage.withUnsafeMutableBytes { herald_resolve(host, UInt16(clamping: port), $0.baseAddress, Int32($0.count)) }
        guard length > 0 else { return nil }
        let address = Array(storage.prefix(Int(length)))
        addresses[key] = address
        return address
    }
}
