import CSocket
#if canImport(Glibc)
import Glibc
#endif

/// A small HTTP/1.1 client with keep-alive, for publishing from `herald bench` to Herald's or a
/// peer's HTTP endpoint. One connection: one request at a time (`post`), or pipelined
/// (`pipelinePOST`, then `collect` the answers, which come in order).
public final class HTTPClient {
    public struct Response: Sendable {
        public let status: Int
        public let body: [UInt8]
    }

    public let host: String
    public let port: Int32
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []

    /// Parses `http://host:port` (any path is ignored here; pass it to `post`).
    public init?(url: String) {
        guard url.hasPrefix("http://") else { return nil }
        let rest = url.dropFirst(7)
        let authority = rest.prefix { $0 != "/" }
        if let colon = authority.lastIndex(of: ":") {
            host = String(authority[authority.startIndex..<colon])
            guard let p = Int32(authority[authority.index(after: colon)...]) else { return nil }
            port = p
        } else {
            host = String(authority)
            port = 80
        }
    }

    deinit { disconnect() }

    public func get(path: String) throws(ClientError) -> Response {
        try request(method: "GET", path: path, body: [], headers: [])
    }

    public func post(path: String, body: [UInt8], headers: [(String, String)] = []) throws(ClientError) -> Response {
        try request(method: "POST", path: path, body: body, headers: headers)
    }

    /// Requests written whose answers have not been collected.
    public private(set) var pending = 0

    /// Writes a POST without waiting for its answer (HTTP/1.1 pipelining).
    public func pipelinePOST(path: String, body: [UInt8], headers: [(String, String)] = []) throws(ClientError) {
        do {
            try ensureConnected()
            try send(Self.encode(method: "POST", path: path, host: "\(host):\(port)", body: body, headers: headers))
            pending += 1
        } catch {
            disconnect()
            throw error
        }
    }

    /// The answers that have arrived, in order, waiting up to `timeoutMillis` for the first one
    /// while any is pending. A connection that closes with answers pending throws.
    public func collect(timeoutMillis: Int32) throws(ClientError) -> [Response] {
        var out: [Response] = []
        do {
            while pending > 0 {
                if let r = try takeResponse() {
                    out.append(r)
                    pending -= 1
                    continue
                }
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&p, 1, out.isEmpty ? timeoutMillis : 0) <= 0 { break }
                try fill()
            }
        } catch {
            disconnect()
            throw error
        }
        return out
    }

    static func encode(method: String, path: String, host: String, body: [UInt8], headers: [(String, String)]) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\nContent-Length: \(body.count)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        head += "\r\n"
        return Array(head.utf8) + body
    }

    private func request(method: String, path: String, body: [UInt8], headers: [(String, String)]) throws(ClientError) -> Response {
        let request = Self.encode(method: method, path: path, host: "\(host):\(port)", body: body, headers: headers)
        // A keep-alive connection the server closed meanwhile fails on first use: retry once.
        for attempt in 0..<2 {
            do {
                try ensureConnected()
                try send(request)
                return try readResponse()
            } catch {
                disconnect()
                if attempt == 1 { throw error }
            }
        }
        throw ClientError("unreachable")
    }

    public func disconnect() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        buffer.removeAll()
        pending = 0
    }

    private func ensureConnected() throws(ClientError) {
        if fd >= 0 { return }
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw ClientError(OSError.describe("socket")) }
        var one: Int32 = 1
        setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let resolved = host == "localhost" ? "127.0.0.1" : host
        guard inet_pton(AF_INET, resolved, &address.sin_addr) == 1 else {
            Glibc.close(s)
            throw ClientError("only numeric IPv4 hosts are supported: \(host)")
        }
        let ok = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard ok == 0 else {
            Glibc.close(s)
            throw ClientError(OSError.describe("cannot connect to \(host):\(port)"))
        }
        fd = s
    }

    private func send(_ bytes: [UInt8]) throws(ClientError) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n <= 0 {
                if n < 0 && OSError.isInterrupted { continue }
                throw ClientError(OSError.describe("send failed"))
            }
            offset += n
        }
    }

    private func fill() throws(ClientError) {
        var chunk = [UInt8](repeating: 0, count: 16_384)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
        if n < 0 && OSError.isInterrupted { return }
        guard n > 0 else { throw ClientError("connection closed") }
        buffer.append(contentsOf: chunk[0..<n])
    }

    private func readResponse() throws(ClientError) -> Response {
        while true {
            if let r = try takeResponse() { return r }
            try fill()
        }
    }

    /// The first whole response in the buffer, taken out of it; nil while it is incomplete.
    private func takeResponse() throws(ClientError) -> Response? {
        guard let headerEnd = Self.headerEnd(buffer) else { return nil }
        let head = String(decoding: buffer[0..<headerEnd], as: UTF8.self)
        let lines = head.split(separator: "\r\n")
        let statusParts = lines.first?.split(separator: " ") ?? []
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw ClientError("bad HTTP status line") }
        var length = 0
        var close = false
        for line in lines.dropFirst() {
            let lower = line.lowercased()
            if lower.hasPrefix("content-length:") { length = Int(lower.dropFirst(15).trimmingSpaces) ?? 0 }
            if lower.hasPrefix("connection:") && lower.contains("close") { close = true }
        }
        let start = headerEnd + 4
        guard buffer.count >= start + length else { return nil }
        let body = Array(buffer[start..<start + length])
        buffer.removeFirst(start + length)
        if close { disconnect() }
        return Response(status: status, body: body)
    }

    private static func headerEnd(_ buffer: [UInt8]) -> Int? {
        guard buffer.count >= 4 else { return nil }
        for i in 0...(buffer.count - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
            return i
        }
        return nil
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " || s.last == "\r" { s = s.dropLast() }
        return s
    }
}
