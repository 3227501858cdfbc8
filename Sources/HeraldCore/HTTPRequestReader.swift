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
    public init(_ status: Int, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }
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
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
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
    private var buffer: [UInt8] = []
    /// Where the unread bytes start in `buffer`.
    private var start = 0
    /// Where the search for the end of the head resumes.
    private var scanned = 0
    private var state = State.head
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

    private mutating func step() throws -> HTTPReadEvent? {
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
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(b)
        }
    }

    /// A comma-separated list's elements, trimmed and lowercased.
    static func tokens(_ value: String?) -> [String] {
        guard let value else { return [] }
        return value.split(separator: ",").map { $0.trimmingSpaces.lowercased() }.filter { !$0.isEmpty }
    }

    // MARK: Body (RFC 9112 §6.3)

    private mutating func beginBody(_ head: HTTPRequestHead) throws -> HTTPReadEvent? {
        let transferEncoding = head.fields.filter { $0.name == "transfer-encoding" }
        let lengths = head.fields.filter { $0.name == "content-length" }
        if !transferEncoding.isEmpty {
            if !lengths.isEmpty {
                throw HTTPRefusal(400, "bad_framing", "Content-Length and Transfer-Encoding together (RFC 9112 §6.3)")
            }
            if head.minorVersion == 0 {
                throw HTTPRefusal(400, "bad_framing", "Transfer-Encoding in an HTTP/1.0 request")
            }
            let codings = Self.tokens(transferEncoding.map(\.value).joined(separator: ","))
            guard codings == ["chunked"] else {
                throw HTTPRefusal(501, "not_implemented", "Transfer-Encoding \(codings.joined(separator: ", ")) is not supported: send chunked or Content-Length")
            }
            state = .chunked(head, .size(body: []))
            return try readChunks(head, .size(body: []))
        }
        if !lengths.isEmpty {
            var declared: Int?
            for field in lengths {
                for piece in field.value.split(separator: ",", omittingEmptySubsequences: false) {
                    let digits = piece.trimmingSpaces
                    guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                        throw HTTPRefusal(400, "bad_framing", "Content-Length \(field.value) is not a non-negative integer")
                    }
                    // 19 digits or more may not fit; any of them is over every body limit.
                    let n = digits.utf8.count > 18 ? Int.max : Int(digits)!
                    if let d = declared, d != n {
                        throw HTTPRefusal(400, "bad_framing", "Content-Length given twice with different values")
                    }
                    declared = n
                }
            }
            let length = declared ?? 0
            if length > limits.maxBodyBytes {
                throw HTTPRefusal(413, "too_large", "body is larger than \(limits.maxBodyBytes) bytes")
            }
            state = .body(head, remaining: length, body: [])
            return try step()
        }
        if ["POST", "PUT", "PATCH"].contains(head.method) {
            throw HTTPRefusal(411, "length_required", "a \(head.method) needs Content-Length (or Transfer-Encoding: chunked)")
        }
        return finish(head, body: [])
    }

    private mutating func finish(_ head: HTTPRequestHead, body: [UInt8]) -> HTTPReadEvent {
        state = .waiting(closeAfter: !head.keepAlive || requestsRead >= limits.maxRequestsPerConnection)
        return .request(head, body: body)
    }

    /// The next line of a chunked body, without its line end, or nil until it is whole. A line
    /// longer than `max` is refused whether or not its end has arrived, so what is read never
    /// depends on how the bytes were split.
    private mutating func takeLine(max: Int, tooLong: String) throws -> ArraySlice<UInt8>? {
        let lf = buffer[start...].firstIndex(of: 0x0A)
        if (lf ?? buffer.count) - start > max + 1 { throw HTTPRefusal(400, "bad_framing", tooLong) }
        guard let lf else { return nil }
        var line = buffer[start..<lf]
        if line.last == 0x0D { line = line.dropLast() }
        if line.count > max { throw HTTPRefusal(400, "bad_framing", tooLong) }
        start = lf + 1
        return line
    }

    private mutating func readChunks(_ head: HTTPRequestHead, _ chunked: Chunked) throws -> HTTPReadEvent? {
        var chunked = chunked
        while true {
            switch chunked {
            case let .size(body):
                guard let line = try takeLine(max: 1024, tooLong: "a chunk size line is over 1024 bytes") else { state = .chunked(head, chunked); return nil }
                let hex = line.prefix(while: { $0 != 0x3B && $0 != 0x20 && $0 != 0x09 })
                guard !hex.isEmpty, hex.count <= 15, let size = Int(String(decoding: hex, as: UTF8.self), radix: 16) else {
                    throw HTTPRefusal(400, "bad_framing", "a chunk size is not hexadecimal")
                }
                if body.count + size > limits.maxBodyBytes {
                    throw HTTPRefusal(413, "too_large", "body is larger than \(limits.maxBodyBytes) bytes")
                }
                chunked = size == 0 ? .trailers(body: body, bytes: 0, count: 0) : .data(body: body, remaining: size)
            case let .data(body, remaining):
                let n = min(remaining, buffer.count - start)
                var body = body
                body.append(contentsOf: buffer[start..<(start + n)])
                start += n
                if remaining - n > 0 { state = .chunked(head, .data(body: body, remaining: remaining - n)); return nil }
                chunked = .dataEnd(body: body)
            case let .dataEnd(body):
                guard let line = try takeLine(max: 0, tooLong: "a chunk is longer than its size") else { state = .chunked(head, chunked); return nil }
                _ = line
                chunked = .size(body: body)
            case let .trailers(body, bytes, count):
                guard let line = try takeLine(max: limits.maxHeadBytes, tooLong: "a trailer field is over \(limits.maxHeadBytes) bytes") else {
                    state = .chunked(head, chunked)
                    return nil
                }
                if line.isEmpty { return finish(head, body: body) }
                _ = try Self.parseField(line) // trailer fields are checked, then dropped
                if bytes + line.count > limits.maxHeadBytes || count + 1 > limits.maxHeaderCount {
                    throw HTTPRefusal(431, "headers_too_large", "the trailer fields exceed the header limits")
                }
                chunked = .trailers(body: body, bytes: bytes + line.count, count: count + 1)
            }
        }
    }
}

/// A request target, split and decoded.
public enum HTTPTarget {
    /// The path and query of an origin-form (`/path?query`) or absolute-form (`http://host/path`)
    /// target; `*` for `OPTIONS *`. Percent-escapes are decoded; a NUL, a control character, a bad
    /// escape, bytes that are not UTF-8, or a `.`/`..` segment in the path are refused (400).
    public static func split(_ target: String, method: String) throws(HTTPRefusal) -> (path: String, query: [HTTPField]) {
        var t = Substring(target)
        if t == "*" {
            guard method == "OPTIONS" else { throw HTTPRefusal(400, "bad_request", "the target * is for OPTIONS only") }
            return ("*", [])
        }
        let lower = t.lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
            let afterScheme = t[t.index(t.startIndex, offsetBy: lower.hasPrefix("http://") ? 7 : 8)...]
            t = afterScheme.firstIndex(of: "/").map { afterScheme[$0...] } ?? "/"
        }
        guard t.first == "/" else { throw HTTPRefusal(400, "bad_request", "the request target must start with /") }
        if let hash = t.firstIndex(of: "#") { t = t[..<hash] }
        let rawPath = t.firstIndex(of: "?").map { t[..<$0] } ?? t
        let rawQuery = t.firstIndex(of: "?").map { t[t.index(after: $0)...] } ?? ""
        guard let path = decode(rawPath, plusIsSpace: false) else {
            throw HTTPRefusal(400, "bad_request", "the path holds a bad percent-escape, a control character or bytes that are not UTF-8")
        }
        if path.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0 == "." || $0 == ".." }) {
            throw HTTPRefusal(400, "bad_request", "the path holds a . or .. segment")
        }
        var query: [HTTPField] = []
        for piece in rawQuery.split(separator: "&") where !piece.isEmpty {
            let eq = piece.firstIndex(of: "=")
            let key = decode(eq.map { piece[..<$0] } ?? piece, plusIsSpace: true)
            let value = eq.map { decode(piece[piece.index(after: $0)...], plusIsSpace: true) } ?? ""
            guard let key, let value else {
                throw HTTPRefusal(400, "bad_request", "the query holds a bad percent-escape, a control character or bytes that are not UTF-8")
            }
            query.append(HTTPField(key, value))
        }
        return (path, query)
    }

    /// Percent-decoding; nil for a bad escape, a decoded control character or invalid UTF-8.
    static func decode(_ s: Substring, plusIsSpace: Bool) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%") {
                guard it.count >= 2, let hi = hexValue(it[it.startIndex]), let lo = hexValue(it[it.startIndex + 1]) else { return nil }
                it = it.dropFirst(2)
                out.append(hi << 4 | lo)
            } else if b == UInt8(ascii: "+") && plusIsSpace {
                out.append(0x20)
            } else {
                out.append(b)
            }
        }
        guard !out.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { return nil }
        return String(validating: out, as: UTF8.self)
    }

    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
