/// The `message` frame of PROTOCOL.md, built once per message and shared by every subscriber.
///
/// The sequencer's Lua script assigns the seq, so a frame is made in two halves:
/// `head` (up to `"seq":`) and `tail` (after the number). Redis joins them around the seq.
public struct MessageEnvelope: Equatable, Sendable {
    public let head: [UInt8]
    public let tail: [UInt8]

    public init(channel: String, id: String, timeMillis: UInt64, body: [UInt8], contentType: String?) throws(EnvelopeError) {
        var head = [UInt8]()
        head.reserveCapacity(48 + channel.utf8.count)
        head.append(contentsOf: #"{"type":"message","channel":"#.utf8)
        JSON.appendString(channel.utf8, to: &head)
        head.append(contentsOf: #","seq":"#.utf8)

        var tail = [UInt8]()
        tail.reserveCapacity(body.count + 64 + id.utf8.count)
        tail.append(contentsOf: #","id":"#.utf8)
        JSON.appendString(id.utf8, to: &tail)
        tail.append(contentsOf: #","time":"#.utf8)
        tail.append(contentsOf: String(timeMillis).utf8)
        tail.append(contentsOf: #","data":"#.utf8)
        switch Self.encoding(for: body, contentType: contentType) {
        case .json:
            do {
                tail.append(contentsOf: try JSON.minify(body))
            } catch {
                throw EnvelopeError(code: .badJSON, message: "body is not valid JSON (\(error.message) at byte \(error.offset))")
            }
        case .text:
            JSON.appendString(body, to: &tail)
        case .base64:
            tail.append(0x22)
            tail.append(contentsOf: Base64.encode(body))
            tail.append(0x22)
            tail.append(contentsOf: #","encoding":"base64""#.utf8)
        }
        tail.append(UInt8(ascii: "}"))
        self.head = head
        self.tail = tail
    }

    /// The full frame for a given seq (what the Lua script stores).
    public func frame(seq: UInt64) -> [UInt8] { head + Array(String(seq).utf8) + tail }

    enum DataEncoding { case json, text, base64 }

    static func encoding(for body: [UInt8], contentType: String?) -> DataEncoding {
        if let ct = contentType, isJSONContentType(ct) { return .json }
        return String(validating: body, as: UTF8.self) != nil ? .text : .base64
    }

    /// `application/json`, with any parameters (`; charset=utf-8`), case-insensitive.
    /// A byte scan (no allocation): it runs for every message the sequencer stores.
    public static func isJSONContentType(_ contentType: String) -> Bool {
        var utf8 = contentType.utf8[...]
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }
        while let c = utf8.first, isSpace(c) { utf8 = utf8.dropFirst() }
        for expected in "application/json".utf8 {
            guard let c = utf8.first else { return false }
            // ASCII lowercase; `expected` is lowercase already.
            let lower = (c >= 0x41 && c <= 0x5A) ? c | 0x20 : c
            if lower != expected { return false }
            utf8 = utf8.dropFirst()
        }
        while let c = utf8.first, isSpace(c) { utf8 = utf8.dropFirst() }
        return utf8.first == nil || utf8.first == UInt8(ascii: ";")
    }

    /// Reads the seq of a stored `message` frame without parsing the JSON.
    ///
    /// Channel names cannot contain a quote, so the first `,"seq":` is the frame's own.
    public static func seq(of frame: [UInt8]) -> UInt64? {
        JSON.unsignedAfter(Array(#","seq":"#.utf8), in: frame, range: 0..<Swift.min(frame.count, 200 + 7))
    }
}

public struct EnvelopeError: Error, Equatable, Sendable {
    public enum Code: String, Sendable, CaseIterable {
        case badChannel = "bad_channel", tooLarge = "too_large", badJSON = "bad_json"
        /// Redis refused the store (for example, a Herald key holds another type).
        case storeFailed = "store_failed"
        /// A message routed to a presence stream that is not a well-formed `PresenceChange`.
        case badPresence = "bad_presence"
    }
    public let code: Code
    public let message: String
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }
    /// The `x-herald-error` header value: `code: sentence`.
    public var header: String { "\(code.rawValue): \(message)" }
}

/// What the sequencer checks before a message may be stored (PROTOCOL.md, "AMQP").
public enum Admission {
    public static func check(channel: String, bodySize: Int, maxBytes: Int) -> EnvelopeError? {
        if let problem = ChannelName.problem(channel) {
            return EnvelopeError(code: .badChannel, message: "\(problem) (got \(JSON.quoted(String(channel.prefix(200)))))")
        }
        if bodySize > maxBytes {
            return EnvelopeError(code: .tooLarge, message: "body is \(bodySize) bytes, the limit is \(maxBytes)")
        }
        return nil
    }
}


public enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(alphabet[Int(n >> 18 & 63)]); out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)]); out.append(alphabet[Int(n & 63)])
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out.append(alphabet[Int(n >> 18 & 63)]); out.append(alphabet[Int(n >> 12 & 63)])
            out.append(UInt8(ascii: "=")); out.append(UInt8(ascii: "="))
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out.append(alphabet[Int(n >> 18 & 63)]); out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)]); out.append(UInt8(ascii: "="))
        }
        return out
    }
}
