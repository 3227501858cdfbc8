import CWebSockets
import HeraldCore
#if canImport(Glibc)
import Glibc
#endif

/// Plain HTTP on the WebSocket port: requests to the delegate, their answers, files, and the
/// HTTP/1.1 refusals of upgrades that will not happen.
extension WebSocketServer {
    func httpCallback(_ wsi: OpaquePointer?, _ reason: lws_callback_reasons,
                      _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        switch reason {
        case LWS_CALLBACK_HTTP:
            guard let wsi else { return -1 }
            // lws files the request line's URI under the token of its method; a method lws does
            // not parse (TRACE, anything unknown) never gets here: lws answers it 403 itself.
            guard let (method, uriToken) = Self.methods.first(where: { lws_hdr_total_length(wsi, $0.1) > 0 }),
                  let path = LWSRequest.header(wsi, uriToken) else { return -1 }
            var headers: [String: String] = [:]
            if let v = LWSRequest.header(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE) { headers["content-type"] = v }
            if let v = LWSRequest.header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) { headers["authorization"] = v }
            if let v = LWSRequest.header(wsi, WSI_TOKEN_ORIGIN) { headers["origin"] = v }
            for name in ["idempotency-key", "x-api-key", "access-control-request-method"] {
                if let v = LWSRequest.customHeader(wsi, name) { headers[name] = v }
            }
            // HEAD is GET without the body (RFC 9110 9.3.2): the routes see GET, the writer drops the body.
            let request = HTTPRequest(method: method == "HEAD" ? "GET" : method, path: path, query: LWSRequest.queryPairs(wsi),
                                      peer: clientAddress(wsi), headers: headers, wsi: wsi)
            request.isHead = method == "HEAD"
            request.server = self
            request.isAdmin = adminConnections.contains(wsi)
            httpRequests[wsi] = request
            if method == "POST" || Int(LWSRequest.header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) ?? "0") ?? 0 > 0 {
                return 0 // the body follows in LWS_CALLBACK_HTTP_BODY
            }
            if method == "GET", path == options.eventStreamPath, !request.isAdmin { return openEventStream(wsi, request: request) }
            return dispatchHTTP(request, wsi)

        case LWS_CALLBACK_HTTP_BODY:
            guard let wsi, let request = httpRequests[wsi] else { return -1 }
            if let input, len > 0, !request.bodyTooLarge {
                if request.body.count + len > options.maxRequestBodyBytes {
                    request.bodyTooLarge = true
                    request.body = []
                } else {
                    request.body.append(contentsOf: UnsafeRawBufferPointer(start: input, count: len))
                }
            }
            return 0

        case LWS_CALLBACK_HTTP_BODY_COMPLETION:
            guard let wsi, let request = httpRequests[wsi] else { return -1 }
            if request.bodyTooLarge {
                request.respond(status: 413, json: #"{"error":"too_large","message":"body is larger than \#(options.maxRequestBodyBytes) bytes"}"#)
                return 0
            }
            return dispatchHTTP(request, wsi)

        case LWS_CALLBACK_HTTP_WRITEABLE:
            if let wsi, let stream = streams[wsi] { return streamWritable(wsi, stream) }
            guard let wsi, let request = httpRequests[wsi], let response = request.response else { return 0 }
            return writeHTTP(wsi, request: request, response: response)

        case LWS_CALLBACK_CLOSED_HTTP:
            if let wsi, let stream = streams.removeValue(forKey: wsi) { streamClosed(stream) }
            if let wsi, let request = httpRequests.removeValue(forKey: wsi) { request.wsi = nil }
            return 0

        case LWS_CALLBACK_HTTP_FILE_COMPLETION:
            guard let wsi else { return -1 }
            httpRequests.removeValue(forKey: wsi)?.wsi = nil
            return lws_http_transaction_completed(wsi) != 0 ? -1 : 0

        default:
            return 0
        }
    }

    /// The methods lws parses, with the token it files the request's URI under.
    private static let methods: [(String, lws_token_indexes)] = [
        ("GET", WSI_TOKEN_GET_URI), ("POST", WSI_TOKEN_POST_URI), ("HEAD", WSI_TOKEN_HEAD_URI),
        ("PUT", WSI_TOKEN_PUT_URI), ("PATCH", WSI_TOKEN_PATCH_URI), ("DELETE", WSI_TOKEN_DELETE_URI),
        ("OPTIONS", WSI_TOKEN_OPTIONS_URI),
    ]

    private func dispatchHTTP(_ request: HTTPRequest, _ wsi: OpaquePointer) -> Int32 {
        guard request.response == nil, request.file == nil else { return 0 }
        delegate?.httpRequest(request)
        if let file = request.file, request.isHead {
            var st = stat()
            guard stat(file.path, &st) == 0 else { return -1 }
            request.response = (200, file.mime, [], [])
            request.headLength = Int(st.st_size)
            lws_callback_on_writable(wsi)
            return 0
        }
        if let file = request.file {
            let status = lws_serve_http_file(wsi, file.path, file.mime, nil, 0)
            if status < 0 { return -1 }
            if status > 0 {
                httpRequests.removeValue(forKey: wsi)?.wsi = nil
                return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
            }
            return 0
        }
        return 0
    }

    func writeHTTP(_ wsi: OpaquePointer, request: HTTPRequest?,
                   response: (status: Int, contentType: String, body: [UInt8], headers: [(String, String)])) -> Int32 {
        let head = request?.isHead ?? false
        guard writeHeaders(wsi, status: response.status, contentType: response.contentType,
                           length: lws_filepos_t(request?.headLength ?? response.body.count), headers: response.headers) else { return -1 }
        httpRequests.removeValue(forKey: wsi)?.wsi = nil
        if !response.body.isEmpty, !head {
            var body = [UInt8](repeating: 0, count: pre + response.body.count)
            body.replaceSubrange(pre..<(pre + response.body.count), with: response.body)
            let n = body.withUnsafeMutableBufferPointer { lws_write(wsi, $0.baseAddress! + pre, response.body.count, LWS_WRITE_HTTP_FINAL) }
            if n < 0 { return -1 }
        }
        return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
    }

    /// Writes a response's status line and headers (`length` `.max`, lws's `LWS_ILLEGAL_HTTP_CONTENT_LEN`: a
    /// body that lasts until the connection closes, a stream's).
    func writeHeaders(_ wsi: OpaquePointer, status: Int, contentType: String, length: lws_filepos_t, headers: [(String, String)]) -> Bool {
        var head = [UInt8](repeating: 0, count: pre + 4096)
        return head.withUnsafeMutableBufferPointer { buffer in
            let start = buffer.baseAddress! + pre
            let end = buffer.baseAddress! + buffer.count - 1
            var p: UnsafeMutablePointer<UInt8>? = start
            if lws_add_http_common_headers(wsi, UInt32(status), contentType, length, &p, end) != 0 { return false }
            for (name, value) in headers {
                let n = name.lowercased() + ":"
                let added = n.withCString { np in
                    value.withCString { vp in
                        lws_add_http_header_by_name(wsi, UnsafeRawPointer(np).assumingMemoryBound(to: UInt8.self),
                                                    UnsafeRawPointer(vp).assumingMemoryBound(to: UInt8.self),
                                                    Int32(strlen(vp)), &p, end)
                    }
                }
                if added != 0 { return false }
            }
            return lws_finalize_write_http_header(wsi, start, &p, end) == 0
        }
    }

    // MARK: Refusing an upgrade

    /// Answers an upgrade that will not happen with a complete HTTP/1.1 response whose body is
    /// the JSON error of PROTOCOL.md, then has lws close the connection (the caller returns 1).
    /// Not `lws_return_http_status`: for an upgrade request lws has not recorded the request's
    /// version yet, so it answered `HTTP/1.0` with an HTML page, which WebSocket clients (Python's
    /// `websockets`) reject as "not a valid HTTP response" instead of reporting the status.
    func refuseUpgrade(_ wsi: OpaquePointer, status: Int, code: String, message: String,
                               headers: [(String, String)] = []) -> Int32 {
        let body = "{\"error\":\(JSON.quoted(code)),\"message\":\(JSON.quoted(message))}"
        var head = "HTTP/1.1 \(status) \(Self.reasonPhrase(status))\r\ncontent-type: application/json\r\n"
            + "content-length: \(body.utf8.count)\r\nconnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        let bytes = Array((head + "\r\n" + body).utf8)
        var buffer = [UInt8](repeating: 0, count: pre + bytes.count)
        buffer.replaceSubrange(pre..<buffer.count, with: bytes)
        _ = buffer.withUnsafeMutableBufferPointer { lws_write(wsi, $0.baseAddress! + pre, bytes.count, LWS_WRITE_HTTP) }
        return 1
    }

    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 426: "Upgrade Required"
        case 429: "Too Many Requests"
        case 503: "Service Unavailable"
        default: "Error"
        }
    }
}
