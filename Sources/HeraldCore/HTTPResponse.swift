/// An HTTP/1.1 response as bytes: the status line, the headers every answer carries
/// (`content-type`, `content-length`, `connection: close` when the connection ends), the
/// route's own headers, and the body (none for a HEAD request, whose length is still announced).
public struct HTTPResponse: Sendable, Equatable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]
    public var headers: [(String, String)]

    public init(status: Int, contentType: String, body: [UInt8], headers: [(String, String)] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    /// Herald's JSON error (`{"error": code, "message": message}`).
    public static func error(_ status: Int, _ code: String, _ message: String, headers: [(String, String)] = []) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: Array(errorJSON(code, message).utf8), headers: headers)
    }

    /// The body of every HTTP refusal (PROTOCOL.md): `{"error": code, "message": message}`.
    public static func errorJSON(_ code: String, _ message: String) -> String {
        "{\"error\":\(JSON.quoted(code)),\"message\":\(JSON.quoted(message))}"
    }

    public static func == (a: HTTPResponse, b: HTTPResponse) -> Bool {
        a.status == b.status && a.contentType == b.contentType && a.body == b.body
            && a.headers.map { "\($0.0):\($0.1)" } == b.headers.map { "\($0.0):\($0.1)" }
    }

    /// The bytes on the wire. `head`: answer a HEAD request (no body); `close`: the connection ends after it.
    public func serialized(head: Bool = false, close: Bool) -> [UInt8] {
        var text = "HTTP/1.1 \(status) \(Self.reason(status))\r\ncontent-type: \(contentType)\r\ncontent-length: \(body.count)\r\n"
        if close { text += "connection: close\r\n" }
        for (name, value) in headers { text += "\(name.lowercased()): \(value)\r\n" }
        text += "\r\n"
        var bytes = Array(text.utf8)
        if !head { bytes += body }
        return bytes
    }

    public static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 202: "Accepted"
        case 204: "No Content"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 411: "Length Required"
        case 413: "Content Too Large"
        case 426: "Upgrade Required"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 503: "Service Unavailable"
        case 505: "HTTP Version Not Supported"
        default: "Error"
        }
    }
}
