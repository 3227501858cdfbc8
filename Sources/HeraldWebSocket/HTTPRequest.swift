import HeraldCore
#if canImport(Glibc)
import Glibc
#endif

/// One HTTP request and its answer, on the service thread (or on the thread it was diverted to:
/// it belongs to one thread at a time, hence `@unchecked Sendable`). A HEAD request is seen as GET
/// (`isHead`): its answer's headers go out, its body does not. Answered at most once: a second
/// `respond` is ignored, so a request can never be answered (or acted on) twice.
public final class HTTPRequest: @unchecked Sendable {
    public let method: String
    public let path: String
    public let query: [(String, String)]
    public let peer: String
    public let body: [UInt8]
    public let headers: [String: String]
    /// A HEAD request: answered with the GET answer's status and headers, without its body.
    public let isHead: Bool
    /// Whether it came to the admin listener (`--admin-listen`) rather than the public port.
    public let isAdmin: Bool
    /// Takes the answer to the connection it came from (the HTTP front, or libwebsockets for a
    /// stream's refusal).
    private let deliver: (HTTPResponse) -> Void
    public private(set) var isAnswered = false

    init(method: String, path: String, query: [(String, String)], peer: String, headers: [String: String], body: [UInt8] = [],
         isHead: Bool, isAdmin: Bool, deliver: @escaping (HTTPResponse) -> Void) {
        self.method = method
        self.path = path
        self.query = query
        self.peer = peer
        self.headers = headers
        self.body = body
        self.isHead = isHead
        self.isAdmin = isAdmin
        self.deliver = deliver
    }

    /// A request header, by lowercase name (`content-type`, `authorization`, `origin`, `idempotency-key`,
    /// `x-api-key`, `access-control-request-method`).
    public func header(_ name: String) -> String? { headers[name] }

    /// Headers every answer to this request carries, whatever its status (CORS: a browser
    /// reads an error only when it carries them too).
    public var commonHeaders: [(String, String)] = []

    public func respond(status: Int, contentType: String, body: [UInt8], headers: [(String, String)] = []) {
        guard !isAnswered else { return }
        isAnswered = true
        deliver(HTTPResponse(status: status, contentType: contentType, body: body, headers: headers + commonHeaders))
    }

    public func respond(status: Int, json: String, headers: [(String, String)] = []) {
        respond(status: status, contentType: "application/json", body: Array(json.utf8), headers: headers)
    }

    /// Answers with a file's contents (the web root's files are small: read whole).
    public func serveFile(path: String, mime: String) {
        guard let bytes = Self.readFile(path) else {
            return respond(status: 404, json: #"{"error":"not_found","message":"no such file"}"#)
        }
        respond(status: 200, contentType: mime, body: bytes)
    }

    static func readFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }
            done += n
        }
        return bytes
    }
}
