import HeraldCore

/// The body `herald bench` publishes, and how it finds its fields again in what clients receive.
///
/// Body: `{"t":<send time, µs since the Unix epoch>,"n":<number within the channel>,"p":"xxx…"}`,
/// padded to the requested size. Herald delivers it inside a `message` frame (`"data":{...}`,
/// with its own `"seq"`); a peer server (Nchan) delivers the body itself.
public enum Payload {
    public static func make(sentMicros: UInt64, n: UInt64, size: Int) -> [UInt8] {
        var out = Array(#"{"t":"#.utf8)
        out.append(contentsOf: String(sentMicros).utf8)
        out.append(contentsOf: #","n":"#.utf8)
        out.append(contentsOf: String(n).utf8)
        out.append(contentsOf: #","p":""#.utf8)
        let pad = Swift.max(0, size - out.count - 2)
        out.append(contentsOf: repeatElement(UInt8(ascii: "x"), count: pad))
        out.append(contentsOf: #""}"#.utf8)
        return out
    }

    /// The unsigned integer after `"key":` in `bytes[range]`.
    public static func number(after key: [UInt8], in bytes: [UInt8], range: Range<Int>) -> UInt64? {
        JSON.unsignedAfter(key, in: bytes, range: range)
    }

    /// The string after `"key":"` (no escapes expected: epochs are hex).
    public static func string(after key: [UInt8], in bytes: [UInt8], range: Range<Int>) -> String? {
        guard let at = find(key, in: bytes, range: range) else { return nil }
        var i = at + key.count
        guard i < range.upperBound, bytes[i] == UInt8(ascii: "\"") else { return nil }
        i += 1
        let start = i
        while i < range.upperBound, bytes[i] != UInt8(ascii: "\"") { i += 1 }
        return String(decoding: bytes[start..<i], as: UTF8.self)
    }

    static func find(_ needle: [UInt8], in bytes: [UInt8], range: Range<Int>) -> Int? {
        JSON.find(needle, in: bytes, range: range)
    }

    /// Splits a WebSocket message into lines (Herald batches frames with "\n").
    public static func lines(_ bytes: [UInt8]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var start = 0
        for i in 0..<bytes.count where bytes[i] == 0x0A {
            if i > start { out.append(start..<i) }
            start = i + 1
        }
        if start < bytes.count { out.append(start..<bytes.count) }
        return out
    }

    public static let seqKey = Array(#""seq":"#.utf8)
    public static let sentKey = Array(#""t":"#.utf8)
    public static let numberKey = Array(#""n":"#.utf8)
    public static let typeMessage = Array(#"{"type":"message""#.utf8)
    public static let typeSubscribed = Array(#"{"type":"subscribed""#.utf8)
    public static let epochKey = Array(#""epoch":"#.utf8)
    public static let replayKey = Array(#""replay":"#.utf8)

    public static func hasPrefix(_ prefix: [UInt8], _ bytes: [UInt8], _ range: Range<Int>) -> Bool {
        guard range.count >= prefix.count else { return false }
        for k in 0..<prefix.count where bytes[range.lowerBound + k] != prefix[k] { return false }
        return true
    }
}
