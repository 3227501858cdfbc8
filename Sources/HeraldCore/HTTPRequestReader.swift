/// The bounds an HTTP/1.1 connection is held to (SECURITY.md, "HTTP requests").
public struct HTTPLimits: Sendable, Equatable {
    /// Request line and headers together; more answers 431.
    public var maxHeadBytes = 16_384
    /// Header fields in one request (and trailer fields of a chunked body); more answers 431.
    public var maxHeaderCount = 100
    /// A body (declared, or decoded from chunks) larger than this answers 413, unread.
    public var maxBodyBytes = 65_536
    /// Requests on one keep-alive connection; the last is answered with `connection: close`.
    public var maxRequestsPerConnection = 1_000
    public init() {}
}

/// An HTTP request the server will not serve, and why: answered with this status and Herald's
/// JSON error, then the connection is closed (its framing can no longer be trusted).
public struct HTTPRefusal: Error, Sendable, Equatable {
    public let status: Int
    public let code: String
    public let message: String
    public init(_ status: Int, _ code: String, _ message: String) { (self.status, self.code, self.message) = (status, code, message) }
}

/// One request, read whole: its head and its body (already de-chunked).
public struct HTTPRequestHead: Sendable, Equatable {
    public var method: String
    /// The path, percent-decoded (always starts with `/`, or is `*`).
    public var path: String
    /// The query's `key=value` pairs in order, percent- and `+`-decoded.
    public var query: [HTTPField]
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: Int
    /// Header fields in order, names lowercased, values trimmed.
    public var fields: [HTTPField]
    /// Whether the client keeps the connection for another request (RFC 9112 §9.3).
    public var keepAlive: Bool

    /// A header's value; repeated fields joined with `, ` (RFC 9110 §5.3).
    public func header(_ name: String) -> String? {
        let values = fields.filter { $0.name == name }.map(\.value)
        return values.isEmpty ? nil : values.joined(separator: ", ")
    }

    /// A WebSocket opening handshake (`Upgrade: websocket`), for libwebsockets to take over.
    public var isWebSocketUpgrade: Bool {
        method == "GET" && HTTPRequestReader.tokens(header("upgrade")).contains("websocket")
    }
}

public struct HTTPField: Sendable, Equatable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) { (self.name, self.value) = (name, value) }
}

/// What the reader found next on a connection.
public enum HTTPReadEvent: Sendable, Equatable {
    /// A whole request. Nothing more is read until `answered()`.
    case request(HTTPRequestHead, body: [UInt8])
    /// Framing that cannot be trusted, or a request over the limits: answer and close.
    case refused(HTTPRefusal)
}

/// HTTP/1.1 request framing for one connection (RFC 9112), pure: bytes go in as they arrive,
/// whatever their boundaries, and each request comes out once, with exactly the body its framing
/// declares. Bytes after a body belong to the next request. A request is answered before the
/// next one is read (`answered()`), so pipelined requests are answered in order, one response
/// each. The states: reading the head → reading the body → waiting for the answer → (keep-alive)
/// reading the next head; or closed, after a refusal or a request that ends the connection.
public struct HTTPRequestReader: Sendable {
    public let limits: HTTPLimits
    var buffer: [UInt8] = []
    /// Where the unread bytes start in `buffer`.
    var start = 0
    /// Where the search for the end of the head resumes.
    private var scanned = 0
    var state = State.head
    /// The raw head of the last request read (for a hand-off: `takeHandOff()`).
    private var lastHead: [UInt8] = []
    public private(set) var requestsRead = 0

    enum State: Sendable {
        case head
        case body(HTTPRequestHead, remaining: Int, body: [UInt8])
        case chunked(HTTPRequestHead, Chunked)
        case waiting(closeAfter: Bool)
        case closed
    }

    enum Chunked: Sendable {
        case size(body: [UInt8])
        case data(body: [UInt8], remaining: Int)
        case dataEnd(body: [UInt8])
        case trailers(body: [UInt8], bytes: Int, count: Int)
    }

    public init(limits: HTTPLimits = HTTPLimits()) {
        self.limits = limits
    }

    /// Bytes as they came off the socket.
    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if case .closed = state { return }
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            scanned -= start
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// Whether some bytes of a request that is not whole yet are here (a stalled request is
    /// answered 408; an idle connection is just closed).
    public var hasPartialRequest: Bool {
        switch state {
        case .head: start < buffer.count
        case .body, .chunked: true
        case .waiting, .closed: false
        }
    }

    /// Bytes received and not read yet (a client pipelining far ahead is not read further).
    public var unreadCount: Int { buffer.count - start }

    /// Waiting for the answer to the request last read.
    public var isWaiting: Bool { if case .waiting = state { true } else { false } }
    public var isClosed: Bool { if case .closed = state { true } else { false } }

    /// Whether the answer to the request last read ends the connection (the client asked for
    /// it, or it was the last request a connection may make): it then says `connection: close`.
    public var closesAfterAnswer: Bool {
        if case let .waiting(close) = state { close } else { true }
    }

    /// The next request (or refusal), or nil: more bytes are needed, an answer is awaited, or
    /// the connection is closed.
    public mutating func next() -> HTTPReadEvent? {
        do {
            return try step()
        } catch let refusal as HTTPRefusal {
            state = .closed
            buffer = []
            start = 0
            return .refused(refusal)
        } catch {
            state = .closed
            return .refused(HTTPRefusal(400, "bad_request", "malformed request"))
        }
    }

    /// The request last read has been answered: read the next one, unless it ended the connection.
    public mutating func answered() {
        guard case let .waiting(close) = state else { return }
        state = close ? .closed : .head
    }

    /// Hands the rest of the connection to another reader (a WebSocket server): the head of the
    /// request just read (which has no body) and every byte after it. The reader is closed.
    public mutating func takeHandOff() -> [UInt8] {
        let rest = lastHead + buffer[start...]
        state = .closed
        buffer = []
        start = 0
        return rest
    }

    mutating func step() throws -> HTTPReadEvent? {
        switch state {
        case .waiting, .closed:
            return nil
        case .head:
            guard let head = try readHead() else { return nil }
            return try beginBody(head)
        case let .body(head, remaining, body):
            let n = min(remaining, buffer.count - start)
            var body = body
            body.append(contentsOf: buffer[start..<(start + n)])
            start += n
            if remaining - n > 0 {
                state = .body(head, remaining: remaining - n, body: body)
                return nil
            }
            return finish(head, body: body)
        case let .chunked(head, chunked):
            return try readChunks(head, chunked)
        }
    }

    // MARK: Head

    /// The head, once its empty line has arrived (LF or CRLF line ends; empty lines before the
    /// request line are skipped, RFC 9112 §2.2).
    private mutating func readHead() throws -> HTTPRequestHead? {
        while start < buffer.count, buffer[start] == 0x0A || (buffer[start] == 0x0D && start + 1 < buffer.count && buffer[start + 1] == 0x0A) {
            start += buffer[start] == 0x0A ? 1 : 2
        }
        if start < buffer.count, buffer[start] == 0x0D, start + 1 == buffer.count { return nil }
        var i = max(scanned, start)
        var end: Int?
        while i < buffer.count {
            if buffer[i] == 0x0A {
                // An empty line: LF LF, or LF CR LF.
                if i + 1 < buffer.count, buffer[i + 1] == 0x0A { end = i + 2; break }
                if i + 2 < buffer.count, buffer[i + 1] == 0x0D, buffer[i + 2] == 0x0A { end = i + 3; break }
                if i + 2 >= buffer.count { break } // the empty line may be on its way
            }
            i += 1
        }
        guard let end else {
            scanned = max(start, buffer.count - 2)
            if buffer.count - start > limits.maxHeadBytes {
                throw HTTPRefusal(431, "headers_too_large", "the request line and headers exceed \(limits.maxHeadBytes) bytes")
            }
            return nil
        }
        if end - start > limits.maxHeadBytes {
            throw HTTPRefusal(431, "headers_too_large", "the request line and headers exceed \(limits.maxHeadBytes) bytes")
        }
        let raw = buffer[start..<end]
        start = end
        scanned = end
        requestsRead += 1
        let head = try Self.parseHead(raw, limits: limits)
        // Only a GET may be handed off (see takeHandOff), so only its bytes are kept.
        lastHead = head.method == "GET" ? Array(raw) : []
        return head
    }

    static func parseHead(_ raw: ArraySlice<UInt8>, limits: HTTPLimits) throws -> HTTPRequestHead {
        var lines: [ArraySlice<UInt8>] = []
        var lineStart = raw.startIndex
        for i in raw.indices where raw[i] == 0x0A {
            var line = raw[lineStart..<i]
            if line.last == 0x0D { line = line.dropLast() }
            lines.append(line)
            lineStart = i + 1
        }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let requestLine = lines.first else { throw HTTPRefusal(400, "bad_request", "no request line") }
        let parts = requestLine.split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy(isTokenByte), !parts[1].isEmpty,
              parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw HTTPRefusal(400, "bad_request", "the request line is not METHOD SP TARGET SP HTTP-VERSION")
        }
        let method = String(decoding: parts[0], as: UTF8.self)
        let version = String(decoding: parts[2], as: UTF8.self)
        let minor: Int
        switch version {
        case "HTTP/1.1": minor = 1
        case "HTTP/1.0": minor = 0
        default:
            let v = Array(version.utf8)
            if v.count == 8, version.hasPrefix("HTTP/"), v[5] >= 0x30 && v[5] <= 0x39, v[6] == 0x2E, v[7] >= 0x30 && v[7] <= 0x39 {
                throw HTTPRefusal(505, "http_version_not_supported", "Herald speaks HTTP/1.1 (and 1.0)")
            }
            throw HTTPRefusal(400, "bad_request", "the request line is not METHOD SP TARGET SP HTTP-VERSION")
        }
        if method == "CONNECT" {
            throw HTTPRefusal(405, "method_not_allowed", "Herald is not a proxy: CONNECT is not served")
        }
        var fields: [HTTPField] = []
        for line in lines.dropFirst() {
            fields.append(try parseField(line))
            if fields.count > limits.maxHeaderCount {
                throw HTTPRefusal(431, "headers_too_large", "more than \(limits.maxHeaderCount) header fields")
            }
        }
        let (path, query) = try HTTPTarget.split(String(decoding: parts[1], as: UTF8.self), method: method)
        var head = HTTPRequestHead(method: method, path: path, query: query, minorVersion: minor, fields: fields, keepAlive: false)
        let hosts = fields.filter { $0.name == "host" }.count
        if minor == 1 && hosts != 1 {
            throw HTTPRefusal(400, "bad_request", hosts == 0 ? "an HTTP/1.1 request needs a Host header" : "more than one Host header")
        }
        let connection = tokens(head.header("connection"))
        head.keepAlive = minor == 1 ? !connection.contains("close") : connection.contains("keep-alive")
        return head
    }

    /// `name: value` (no space before the colon, no line folding: RFC 9112 §5).
    static func parseField(_ line: ArraySlice<UInt8>) throws -> HTTPField {
        guard let first = line.first, first != 0x20, first != 0x09 else {
            throw HTTPRefusal(400, "bad_request", "obsolete line folding in a header (RFC 9112 §5.2)")
        }
        guard let colon = line.firstIndex(of: 0x3A), colon > line.startIndex,
              line[line.startIndex..<colon].allSatisfy(isTokenByte) else {
            throw HTTPRefusal(400, "bad_request", "a header line is not NAME: VALUE")
        }
        var value = line[(colon + 1)...]
        while let b = value.first, b == 0x20 || b == 0x09 { value = value.dropFirst() }
        while let b = value.last, b == 0x20 || b == 0x09 { value = value.dropLast() }
        guard value.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
            throw HTTPRefusal(400, "bad_request", "a header value holds a control character")
        }
        return HTTPField(String(decoding: line[line.startIndex..<colon], as: UTF8.self).lowercased(),
                         String(decoding: value, as: UTF8.self))
    }

    static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// A comma-separated list's elements, trimmed and lowercased.
    static func tokens(_ value: String?) -> [String] {
        guard let value else { return [] }
        return value.split(separator: ",").map { $0.trimmingSpaces.lowercased() }.filter { !$0.isEmpty }
    }
}
