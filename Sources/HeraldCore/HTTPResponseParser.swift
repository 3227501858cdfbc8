/// Reads one HTTP/1.1 response (RFC 9112) from bytes as they arrive: status, headers and a body
/// framed by Content-Length, chunked coding, or the end of the connection. For Herald's own
/// outbound requests (JWKS, connect proxy); bounded by `maxBodyBytes` and `maxHeaderBytes`.
public struct HTTPResponseParser {
    public struct Response: Sendable, Equatable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]
        /// The server keeps the connection open for another request.
        public var keepAlive: Bool

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }

        public static func == (a: Response, b: Response) -> Bool {
            a.status == b.status && a.body == b.body && a.keepAlive == b.keepAlive
                && a.headers.map { "\($0.0):\($0.1)" } == b.headers.map { "\($0.0):\($0.1)" }
        }
    }

    public enum Outcome: Equatable {
        case incomplete
        case complete(Response)
        case bad(String)
    }

    public let maxBodyBytes: Int
    public let maxHeaderBytes: Int
    /// The answer is to a HEAD request (no body whatever the headers say).
    public var headRequest = false
    private var buffer: [UInt8] = []

    public init(maxBodyBytes: Int, maxHeaderBytes: Int = 16_384) {
        self.maxBodyBytes = maxBodyBytes
        self.maxHeaderBytes = maxHeaderBytes
    }

    /// Adds bytes; `ended` when the peer closed. Complete once the body's framing is satisfied.
    public mutating func feed(_ bytes: some Sequence<UInt8>, ended: Bool = false) -> Outcome {
        buffer.append(contentsOf: bytes)
        return parse(ended: ended)
    }

    private func parse(ended: Bool) -> Outcome {
        guard let headEnd = Self.find([13, 10, 13, 10], in: buffer, from: 0) else {
            if buffer.count > maxHeaderBytes { return .bad("response headers larger than \(maxHeaderBytes) bytes") }
            return ended ? .bad("connection closed before the response headers") : .incomplete
        }
        let lines = String(decoding: buffer[..<headEnd], as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusLine = lines[0].split(separator: " ", maxSplits: 2)
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), statusLine[1].count == 3,
              let status = Int(statusLine[1]), (100...599).contains(status) else {
            return .bad("bad status line")
        }
        var headers: [(String, String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { return .bad("bad header line") }
            headers.append((String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(" \t")))
        }
        var response = Response(status: status, headers: headers, body: [], keepAlive: statusLine[0] == "HTTP/1.1")
        if let connection = response.header("connection")?.lowercased() {
            if connection.contains("close") { response.keepAlive = false }
            if connection.contains("keep-alive") { response.keepAlive = true }
        }
        let bodyStart = headEnd + 4
        if headRequest || status == 204 || status == 304 || status < 200 {
            return .complete(response)
        }
        if response.header("transfer-encoding")?.lowercased().contains("chunked") == true {
            return chunked(from: bodyStart, response, ended: ended)
        }
        if let lengthText = response.header("content-length") {
            guard !lengthText.isEmpty, lengthText.allSatisfy(\.isASCIIDigit), let length = Int(lengthText.prefix(12)) else {
                return .bad("bad Content-Length")
            }
            guard length <= maxBodyBytes else { return .bad("response body larger than \(maxBodyBytes) bytes") }
            guard buffer.count - bodyStart >= length else { return ended ? .bad("connection closed inside the body") : .incomplete }
            response.body = Array(buffer[bodyStart..<bodyStart + length])
            return .complete(response)
        }
        // Delimited by the end of the connection.
        guard buffer.count - bodyStart <= maxBodyBytes else { return .bad("response body larger than \(maxBodyBytes) bytes") }
        guard ended else { return .incomplete }
        response.body = Array(buffer[bodyStart...])
        response.keepAlive = false
        return .complete(response)
    }

    private func chunked(from start: Int, _ head: Response, ended: Bool) -> Outcome {
        var response = head
        var at = start
        while true {
            guard let lineEnd = Self.find([13, 10], in: buffer, from: at) else {
                return ended ? .bad("connection closed inside the body") : .incomplete
            }
            let sizeText = buffer[at..<lineEnd].prefix { $0 != UInt8(ascii: ";") }
            guard !sizeText.isEmpty, sizeText.count <= 8, sizeText.allSatisfy({ Self.hexValue($0) != nil }) else {
                return .bad("bad chunk size")
            }
            let size = sizeText.reduce(0) { $0 << 4 | Int(Self.hexValue($1)!) }
            at = lineEnd + 2
            if size == 0 {
                // Trailers (ignored) up to an empty line.
                guard let end = Self.find([13, 10, 13, 10], in: buffer, from: at - 2) else {
                    return ended ? .bad("connection closed inside the body") : .incomplete
                }
                _ = end
                return .complete(response)
            }
            guard response.body.count + size <= maxBodyBytes else { return .bad("response body larger than \(maxBodyBytes) bytes") }
            guard buffer.count >= at + size + 2 else { return ended ? .bad("connection closed inside the body") : .incomplete }
            guard buffer[at + size] == 13, buffer[at + size + 1] == 10 else { return .bad("bad chunk framing") }
            response.body += buffer[at..<at + size]
            at += size + 2
        }
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - 48
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - 87
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - 55
        default: nil
        }
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard haystack.count >= needle.count, from <= haystack.count - needle.count else { return nil }
        var i = max(0, from)
        while i <= haystack.count - needle.count {
            if haystack[i] == needle[0] && Array(haystack[i..<i + needle.count]) == needle { return i }
            i += 1
        }
        return nil
    }
}

extension String {
    fileprivate func trimmingCharacters(_ set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}

extension UInt8 {
    fileprivate var isASCIIDigit: Bool { self >= 48 && self <= 57 }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
