/// Reading a request's body (RFC 9112 §6.3): exactly `Content-Length` bytes, or chunks decoded.
extension HTTPRequestReader {
    mutating func beginBody(_ head: HTTPRequestHead) throws -> HTTPReadEvent? {
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

    mutating func finish(_ head: HTTPRequestHead, body: [UInt8]) -> HTTPReadEvent {
        state = .waiting(closeAfter: !head.keepAlive || requestsRead >= limits.maxRequestsPerConnection)
        return .request(head, body: body)
    }

    /// The next line of a chunked body, without its line end, or nil until it is whole. A line
    /// longer than `max` is refused whether or not its end has arrived, so what is read never
    /// depends on how the bytes were split.
    mutating func takeLine(max: Int, tooLong: String) throws -> ArraySlice<UInt8>? {
        let lf = buffer[start...].firstIndex(of: 0x0A)
        if (lf ?? buffer.count) - start > max + 1 { throw HTTPRefusal(400, "bad_framing", tooLong) }
        guard let lf else { return nil }
        var line = buffer[start..<lf]
        if line.last == 0x0D { line = line.dropLast() }
        if line.count > max { throw HTTPRefusal(400, "bad_framing", tooLong) }
        start = lf + 1
        return line
    }

    mutating func readChunks(_ head: HTTPRequestHead, _ chunked: Chunked) throws -> HTTPReadEvent? {
        var chunked = chunked
        while true {
            switch chunked {
            case let .size(body):
                guard let line = try takeLine(max: 1024, tooLong: "a chunk size line is over 1024 bytes") else { state = .chunked(head, chunked); return nil }
                let hex = line.prefix(while: { $0 != 0x3B && $0 != 0x20 && $0 != 0x09 })
                // Hex digits only: `Int(_:radix:)` would also take a sign, and "-3" is no size.
                guard !hex.isEmpty, hex.count <= 15,
                      hex.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x66) }),
                      let size = Int(String(decoding: hex, as: UTF8.self), radix: 16) else {
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
