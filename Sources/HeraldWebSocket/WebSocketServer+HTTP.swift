import CWebSockets
import HeraldCore
#if canImport(Glibc)
import Glibc
#endif

/// HTTP that reaches libwebsockets: only what the front handed over (see `Acceptor`), a
/// Server-Sent Events request or a GET that asked to upgrade, one request per connection. Its
/// answer ends the connection, so lws never reads a second request itself.
extension WebSocketServer {
    func httpCallback(_ wsi: OpaquePointer?, _ reason: lws_callback_reasons,
                      _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        switch reason {
        case LWS_CALLBACK_HTTP:
            guard let wsi, lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0,
                  let path = LWSRequest.header(wsi, WSI_TOKEN_GET_URI) else {
                // The front hands over GETs only; anything else is not lws's to answer.
                return -1
            }
            var headers: [String: String] = [:]
            if let v = LWSRequest.header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) { headers["authorization"] = v }
            if let v = LWSRequest.header(wsi, WSI_TOKEN_ORIGIN) { headers["origin"] = v }
            let request = HTTPRequest(method: "GET", path: path, query: LWSRequest.queryPairs(wsi), peer: clientAddress(wsi),
                                      headers: headers, isHead: false, isAdmin: false) { [unowned self] response in
                self.httpAnswers[wsi] = response
                lws_callback_on_writable(wsi)
            }
            if path == options.eventStreamPath { return openEventStream(wsi, request: request) }
            // A GET with `Upgrade: websocket` that lws did not take as an upgrade.
            delegate?.httpRequest(request)
            return 0

        case LWS_CALLBACK_HTTP_WRITEABLE:
            if let wsi, let stream = streams[wsi] { return streamWritable(wsi, stream) }
            guard let wsi, let response = httpAnswers.removeValue(forKey: wsi) else { return 0 }
            return writeHTTP(wsi, response)

        case LWS_CALLBACK_CLOSED_HTTP:
            if let wsi, let stream = streams.removeValue(forKey: wsi) { streamClosed(stream) }
            if let wsi { httpAnswers.removeValue(forKey: wsi) }
            return 0

        default:
            // Bodies never reach lws: the front reads them.
            return reason == LWS_CALLBACK_HTTP_BODY || reason == LWS_CALLBACK_HTTP_BODY_COMPLETION ? -1 : 0
        }
    }

    /// Writes a whole answer, then ends the connection (lws would otherwise read the next
    /// request itself): -1 once the bytes are out, else after lws has written what it buffered.
    func writeHTTP(_ wsi: OpaquePointer, _ response: HTTPResponse) -> Int32 {
        guard writeRaw(wsi, response.serialized(close: true)) else { return -1 }
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, 2)
        if lws_partial_buffered(wsi) != 0 {
            // lws writes the rest on its own; the timeout closes the connection after it.
            return 0
        }
        return -1
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
        _ = writeRaw(wsi, HTTPResponse.error(status, code, message, headers: headers).serialized(close: true))
        return 1
    }
}
