import CWebSockets

/// One HTTP request and its answer. A HEAD request is seen as GET (`isHead`): its answer's body is not sent.
public final class HTTPRequest {
    public let method: String
    public let path: String
    public let query: [(String, String)]
    public let peer: String
    public internal(set) var body: [UInt8] = []
    var headers: [String: String]
    var wsi: OpaquePointer?
    var response: (status: Int, contentType: String, body: [UInt8], headers: [(String, String)])?
    var bodyTooLarge = false
    /// A HEAD request: answered with the GET answer's status and headers, without its body.
    public internal(set) var isHead = false
    /// The length a HEAD answer announces for a file (the file's size), when it is not the body's.
    var headLength: Int?
    weak var server: WebSocketServer?
    /// Whether it came to the admin listener (`--admin-listen`) rather than the public port.
    public internal(set) var isAdmin = false

    init(method: String, path: String, query: [(String, String)], peer: String, headers: [String: String], wsi: OpaquePointer?) {
        self.method = method
        self.path = path
        self.query = query
        self.peer = peer
        self.headers = headers
        self.wsi = wsi
    }

    /// A request header, by lowercase name (`content-type`, `authorization`, `origin`, `idempotency-key`,
    /// `x-api-key`, `access-control-request-method`).
    public func header(_ name: String) -> String? { headers[name] }

    /// Whether the client is still there to be answered.
    public var isConnected: Bool { wsi != nil }

    /// Headers every answer to this request carries, whatever its status (CORS: a browser
    /// reads an error only when it carries them too).
    public var commonHeaders: [(String, String)] = []

    public func respond(status: Int, contentType: String, body: [UInt8], headers: [(String, String)] = []) {
        guard let wsi, response == nil else { return }
        response = (status, contentType, body, headers + commonHeaders)
        lws_callback_on_writable(wsi)
    }

    public func respond(status: Int, json: String, headers: [(String, String)] = []) {
        respond(status: status, contentType: "application/json", body: Array(json.utf8), headers: headers)
    }

    var file: (path: String, mime: String)?

    /// Serves a file from disk (only from `httpRequest`, synchronously).
    public func serveFile(path: String, mime: String) {
        file = (path, mime)
    }
}
