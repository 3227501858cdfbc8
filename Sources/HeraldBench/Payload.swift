import HeraldCore

/// The body `herald bench` publishes, and how it finds its fields again in what clients receive.
///
/// Body: `{"t":<send time, µs since the Unix epoch>,"n":<number within the channel>,"p":"xxx…"}`,
/// padded to the requested size. Herald delivers it inside a `message` frame (`"data":{...}`,
/// with its own `"seq"`); a peer server (Nchan) delivers the body itself.
///
/// With a template (`--body-file`, a JSON object such as a price-ticker update), the body is the
/// template with `"t"` and `"n"` put first: the size and shape of real traffic, which matters
/// when it is compressed (padding compresses to nothing).
public enum Payload {
    public static func make(sentMicros: UInt64, n: UInt64, size: Int, template: [UInt8]? = nil) -> [UInt8] {
        var out = Array(#"{"t":"#.utf8)
        out.append(contentsOf: String(sentMicros).utf8)
        out.append(contentsOf: #","n":"#.utf8)
        out.append(contentsOf: String(n).utf8)
        if let template, let open = template.firstIndex(of: UInt8(ascii: "{")),
           let close = template.lastIndex(of: UInt8(ascii: "}")), close > open {
            let rest = template[(open + 1)...close].drop { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
            if rest.first != UInt8(ascii: "}") { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: rest)
            return out
        }
        out.append(contentsOf: #","p":""#.utf8)
        let pad = Swift.max(0, size - out.count - 2)
        out.append(contentsOf: repeatElement(UInt8(ascii: "x"), count: pad))
        out.append(contentsOf: #""}"#.utf8)
        return out
    }

    /// The unsigned integer after `"key":` in `bytes[range]`.
    public static func number(after key: [UInt8], in bytes: [UInt8], range: Range<Int>) -> UInt64? {
        numberAndEnd(after: key, in: bytes, range: range)?.value
    }

    /// The unsigned integer after `"key":` in `bytes[range]`, and the index just past its digits,
    /// so that a later field can be looked for from there.
    public static func numberAndEnd(after key: [UInt8], in bytes: [UInt8], range: Range<Int>) -> (value: UInt64, end: Int)? {
        guard let at = find(key, in: bytes, range: range) else { return nil }
        let span = bytes.span
        var i = at + key.count
        var value: UInt64 = 0
        while i < range.upperBound, span[i] >= 0x30, span[i] <= 0x39 {
            value = value &* 10 &+ UInt64(span[i] &- 0x30)
            i += 1
        }
        return i > at + key.count ? (value, i) : nil
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
        forEachLine(bytes) { out.append($0) }
        return out
    }

    /// Calls `body` with each non-empty line of `bytes`, without allocating: the generator runs
    /// this for every delivery, on the cores it shares with the server it measures.
    public static func forEachLine(_ bytes: [UInt8], _ body: (Range<Int>) -> Void) {
        let span = bytes.span
        var start = 0
        var i = 0
        while i < span.count {
            if span[i] == 0x0A {
                if i > start { body(start..<i) }
                start = i + 1
            }
            i += 1
        }
        if start < span.count { body(start..<span.count) }
    }

    public static let seqKey = Array(#""seq":"#.utf8)
    public static let sentKey = Array(#""t":"#.utf8)
    public static let numberKey = Array(#""n":"#.utf8)
    public static let typeMessage = Array(#"{"type":"message""#.utf8)
    public static let typeSubscribed = Array(#"{"type":"subscribed""#.utf8)
    public static let epochKey = Array(#""epoch":"#.utf8)
    public static let typePresence = Array(#"{"type":"presence""#.utf8)
    public static let typeJoin = Array(#"{"type":"join""#.utf8)
    public static let typeLeave = Array(#"{"type":"leave""#.utf8)
    public static let memberStart = Array(#"{"client":"#.utf8)

    /// How many times `needle` occurs in `range` of `bytes` (the members of a presence frame).
    static func count(_ needle: [UInt8], in bytes: [UInt8], range: Range<Int>) -> Int {
        var n = 0
        var from = range.lowerBound
        while from < range.upperBound, let at = find(needle, in: bytes, range: from..<range.upperBound) {
            n += 1
            from = at + needle.count
        }
        return n
    }
    public static let replayKey = Array(#""replay":"#.utf8)

    public static func hasPrefix(_ prefix: [UInt8], _ bytes: [UInt8], _ range: Range<Int>) -> Bool {
        guard range.count >= prefix.count else { return false }
        for k in 0..<prefix.count where bytes[range.lowerBound + k] != prefix[k] { return false }
        return true
    }
}
