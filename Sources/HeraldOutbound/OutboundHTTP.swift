import COpenSSL
import CSocket
import HeraldCore
import HeraldRuntime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An `http://` or `https://` URL Herald calls (a JWKS, a connect proxy).
public struct OutboundURL: Sendable, Equatable, CustomStringConvertible {
    public let tls: Bool
    public let host: String
    public let port: UInt16
    /// Path and query, at least `/`.
    public let target: String

    public init?(_ text: String) {
        let rest: Substring
        if text.hasPrefix("https://") { tls = true; rest = text.dropFirst(8) }
        else if text.hasPrefix("http://") { tls = false; rest = text.dropFirst(7) }
        else { return nil }
        let authority = rest.prefix { $0 != "/" && $0 != "?" }
        let path = rest.dropFirst(authority.count)
        target = path.isEmpty ? "/" : (path.hasPrefix("?") ? "/" + path : String(path))
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        if let (h, p) = HostPort.parse(String(authority)) {
            host = h
            port = UInt16(p)
        } else if authority.hasPrefix("[") && authority.hasSuffix("]") {
            host = String(authority.dropFirst().dropLast())
            port = tls ? 443 : 80
        } else {
            guard !authority.contains(":") else { return nil }
            host = String(authority)
            port = tls ? 443 : 80
        }
    }

    /// An IPv4 or IPv6 address rather than a name.
    var hostIsAddress: Bool { host.contains(":") || host.allSatisfy { $0 == "." || $0.isNumber } }

    var origin: String { "\(tls ? "https" : "http")://\(host):\(port)" }
    var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == (tls ? 443 : 80) ? h : "\(h):\(port)"
    }
    public var description: String { origin + target }
}

/// Why an outbound request failed: `kind` is a metric label.
public struct OutboundError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable { case connect, timeout, tls, protocolError = "protocol" }
    public let kind: Kind
    public let description: String
    init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

/// A blocking HTTP/1.1 client for Herald's calls out: every step bounded by one deadline,
/// TLS verified against the system's CAs (OpenSSL's default paths, so `SSL_CERT_FILE` works),
/// keep-alive connections reused per origin up to `maxIdlePerOrigin`.
///
/// - Important: thread-safe: each request owns its connection; only the idle pool is shared.
public final class OutboundHTTPClient: Sendable {
    public let maxBodyBytes: Int
    public let maxIdlePerOrigin: Int
    private let idle = Mutex<[String: [Connection]]>([:])
    private let tlsContext: TLSContext

    public init(maxBodyBytes: Int = 1 << 20, maxIdlePerOrigin: Int = 8) {
        self.maxBodyBytes = maxBodyBytes
        self.maxIdlePerOrigin = maxIdlePerOrigin
        tlsContext = TLSContext()
    }

    public func request(_ url: OutboundURL, method: String = "GET", headers: [(String, String)] = [], body: [UInt8] = [],
                        timeoutMillis: Int) throws(OutboundError) -> HTTPResponseParser.Response {
        let deadline = nowMillis() + Int64(timeoutMillis)
        var head = "\(method) \(url.target) HTTP/1.1\r\nHost: \(url.hostHeader)\r\nUser-Agent: herald\r\n"
        if !body.isEmpty || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        for (k, v) in headers where !k.contains("\r") && !k.contains("\n") && !v.contains("\r") && !v.contains("\n") {
            head += "\(k): \(v)\r\n"
        }
        head += "\r\n"
        let bytes = Array(head.utf8) + body
        // A kept-alive connection the server closed meanwhile fails before any answer: retry once fresh.
        if let reused = idle.withLock({ $0[url.origin]?.popLast() }) {
            if let response = try? exchange(reused, bytes, url: url, method: method, deadline: deadline) { return response }
        }
        let connection = try Connection.open(url, tls: tlsContext, deadline: deadline)
        return try exchange(connection, bytes, url: url, method: method, deadline: deadline)
    }

    private func exchange(_ connection: Connection, _ bytes: [UInt8], url: OutboundURL, method: String,
                          deadline: Int64) throws(OutboundError) -> HTTPResponseParser.Response {
        var parser = HTTPResponseParser(maxBodyBytes: maxBodyBytes)
        parser.headRequest = method == "HEAD"
        do throws(OutboundError) {
            try connection.write(bytes, deadline: deadline)
            while true {
                let (chunk, ended) = try connection.read(deadline: deadline)
                switch parser.feed(chunk, ended: ended) {
                case .incomplete: continue
                case let .bad(why): throw OutboundError(.protocolError, "\(url.origin): \(why)")
                case let .complete(response):
                    if response.keepAlive {
                        let kept = idle.withLock { pool -> Bool in
                            guard pool[url.origin, default: []].count < maxIdlePerOrigin else { return false }
                            pool[url.origin, default: []].append(connection)
                            return true
                        }
                        if !kept { connection.close() }
                    } else {
                        connection.close()
                    }
                    return response
                }
            }
        } catch {
            connection.close()
            throw error
        }
    }
}

private func nowMillis() -> Int64 { Int64(monotonicMillis()) }

/// One client TLS context for every outbound connection: peers verified, TLS 1.2 at least.
final class TLSContext: @unchecked Sendable {
    let context: OpaquePointer?

    init() {
        let ctx = SSL_CTX_new(TLS_client_method())
        if let ctx {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
            SSL_CTX_set_default_verify_paths(ctx)
            SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, Int(TLS1_2_VERSION), nil)
        }
        context = ctx
    }

    deinit { if let context { SSL_CTX_free(context) } }
}

/// A socket, with TLS when the URL says so. Non-blocking; every wait bounded by the deadline.
final class Connection: @unchecked Sendable {
    let fd: Int32
    let ssl: OpaquePointer?
    let url: OutboundURL

    private init(fd: Int32, ssl: OpaquePointer?, url: OutboundURL) {
        self.fd = fd
        self.ssl = ssl
        self.url = url
    }

    static func open(_ url: OutboundURL, tls: TLSContext, deadline: Int64) throws(OutboundError) -> Connection {
        var address = [UInt8](repeating: 0, count: 128)
        let length = address.withUnsafeMutableBytes { herald_resolve(url.host, url.port, $0.baseAddress, Int32($0.count)) }
        guard length > 0 else { throw OutboundError(.connect, "\(url.origin): cannot resolve \(url.host)") }
        let fd = address.withUnsafeBytes { herald_tcp_connect_to($0.baseAddress, length) }
        guard fd >= 0 else { throw OutboundError(.connect, "\(url.origin): \(String(cString: herald_strerror(herald_errno())))") }
        do throws(OutboundError) {
            try wait(fd, Int16(POLLOUT), deadline, url)
            let e = herald_connect_error(fd)
            guard e == 0 else { throw OutboundError(.connect, "\(url.origin): \(String(cString: herald_strerror(e)))") }
        } catch {
            herald_close(fd)
            throw error
        }
        guard url.tls else { return Connection(fd: fd, ssl: nil, url: url) }
        guard let ctx = tls.context, let ssl = SSL_new(ctx) else {
            herald_close(fd)
            throw OutboundError(.tls, "\(url.origin): no TLS context")
        }
        let connection = Connection(fd: fd, ssl: ssl, url: url)
        SSL_set_fd(ssl, fd)
        if url.hostIsAddress {
            // An IP literal is checked against the certificate's IP addresses, and sent without SNI (RFC 6066 §3).
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), url.host)
        } else {
            _ = herald_ssl_set_sni(ssl, url.host)
            SSL_set1_host(ssl, url.host)
        }
        do throws(OutboundError) {
            while true {
                let r = SSL_connect(ssl)
                if r == 1 { return connection }
                try connection.waitTLS(r, deadline, url, during: "handshake")
            }
        } catch {
            connection.close()
            throw error
        }
    }

    private static func wait(_ fd: Int32, _ events: Int16, _ deadline: Int64, _ url: OutboundURL) throws(OutboundError) {
        while true {
            let left = deadline - nowMillis()
            guard left > 0 else { throw OutboundError(.timeout, "\(url.origin): no answer in time") }
            let r = herald_poll_one(fd, events, Int32(min(left, 60_000)))
            if r > 0 { return }
            if r < 0 && -r != EINTR { throw OutboundError(.connect, "\(url.origin): poll failed") }
        }
    }

    /// After an SSL call returned `result`: wait for what it needs, or throw.
    private func waitTLS(_ result: Int32, _ deadline: Int64, _ url: OutboundURL, during: String) throws(OutboundError) {
        let error = SSL_get_error(ssl, result)
        defer { ERR_clear_error() }
        switch error {
        case SSL_ERROR_WANT_READ: try Self.wait(fd, Int16(POLLIN), deadline, url)
        case SSL_ERROR_WANT_WRITE: try Self.wait(fd, Int16(POLLOUT), deadline, url)
        default:
            let verify = SSL_get_verify_result(ssl)
            let detail = verify != X509_V_OK ? String(cString: X509_verify_cert_error_string(verify)) : "TLS error \(error) \(during)"
            throw OutboundError(.tls, "\(url.origin): \(detail)")
        }
    }

    func write(_ bytes: [UInt8], deadline: Int64) throws(OutboundError) {
        var offset = 0
        while offset < bytes.count {
            if let ssl {
                let n = bytes.withUnsafeBytes { SSL_write(ssl, $0.baseAddress! + offset, Int32(bytes.count - offset)) }
                if n > 0 { offset += Int(n); continue }
                try waitTLS(n, deadline, url, during: "write")
            } else {
                let n = bytes.withUnsafeBytes { herald_send(fd, $0.baseAddress! + offset, bytes.count - offset) }
                if n > 0 { offset += n; continue }
                guard n == -Int(EAGAIN) || n == -Int(EINTR) else { throw OutboundError(.connect, "\(url.origin): connection lost while writing") }
                try Self.wait(fd, Int16(POLLOUT), deadline, url)
            }
        }
    }

    /// Some bytes, or `ended` when the peer closed.
    func read(deadline: Int64) throws(OutboundError) -> ([UInt8], ended: Bool) {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            if let ssl {
                let n = buffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
                if n > 0 { return (Array(buffer[..<Int(n)]), false) }
                if SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN { ERR_clear_error(); return ([], true) }
                if SSL_get_error(ssl, n) == SSL_ERROR_SYSCALL { ERR_clear_error(); return ([], true) }
                try waitTLS(n, deadline, url, during: "read")
            } else {
                let n = buffer.withUnsafeMutableBytes { herald_recv(fd, $0.baseAddress, $0.count) }
                if n > 0 { return (Array(buffer[..<n]), false) }
                if n == 0 { return ([], true) }
                guard n == -Int(EAGAIN) || n == -Int(EINTR) else { return ([], true) }
                try Self.wait(fd, Int16(POLLIN), deadline, url)
            }
        }
    }

    func close() {
        if let ssl { SSL_free(ssl) }
        herald_close(fd)
    }
}
