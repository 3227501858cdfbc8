import CWebSockets

/// What lws knows of a request: headers, query, peer, and whether an upgrade is valid.
enum LWSRequest {
    /// What makes this upgrade request invalid under RFC 6455 §4.2.1, or nil: lws would accept
    /// older drafts and drop a request without a key without a word.
    static func upgradeProblem(_ wsi: OpaquePointer) -> (status: Int, message: String)? {
        guard let key = header(wsi, WSI_TOKEN_KEY), isWebSocketKey(key) else {
            return (400, "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455)")
        }
        guard header(wsi, WSI_TOKEN_VERSION) == "13" else {
            return (426, "Sec-WebSocket-Version must be 13 (RFC 6455)")
        }
        return nil
    }

    /// A nonce of 16 bytes in padded base64: 22 characters of the alphabet, then `==`.
    static func isWebSocketKey(_ key: String) -> Bool {
        let bytes = Array(key.utf8)
        guard bytes.count == 24, bytes[22] == UInt8(ascii: "="), bytes[23] == UInt8(ascii: "=") else { return false }
        return bytes[..<22].allSatisfy { b in
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"): true
            default: false
            }
        }
    }

    static func header(_ wsi: OpaquePointer, _ token: lws_token_indexes) -> String? {
        let length = Int(lws_hdr_total_length(wsi, token))
        guard length > 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: length + 1)
        guard lws_hdr_copy(wsi, &buffer, Int32(buffer.count), token) >= 0 else { return nil }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func customHeader(_ wsi: OpaquePointer, _ name: String) -> String? {
        let key = name + ":"
        let length = Int(lws_hdr_custom_length(wsi, key, Int32(key.utf8.count)))
        guard length > 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: length + 1)
        guard lws_hdr_custom_copy(wsi, &buffer, Int32(buffer.count), key, Int32(key.utf8.count)) >= 0 else { return nil }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The URL's query as urldecoded `key=value` pairs, in order.
    static func queryPairs(_ wsi: OpaquePointer) -> [(String, String)] {
        var pairs: [(String, String)] = []
        var buffer = [CChar](repeating: 0, count: 1024)
        var index: Int32 = 0
        while index < 64 {
            let n = lws_hdr_copy_fragment(wsi, &buffer, Int32(buffer.count), WSI_TOKEN_HTTP_URI_ARGS, index)
            if n < 0 { break }
            let text = String(decoding: buffer.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let eq = text.firstIndex(of: "=") {
                pairs.append((String(text[..<eq]), String(text[text.index(after: eq)...])))
            } else if !text.isEmpty {
                pairs.append((text, ""))
            }
            index += 1
        }
        return pairs
    }

    static func peer(_ wsi: OpaquePointer) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        guard let p = lws_get_peer_simple(wsi, &buffer, buffer.count) else { return "?" }
        return String(cString: p)
    }
}
