/// A request target, split and decoded.
public enum HTTPTarget {
    /// The path and query of an origin-form (`/path?query`) or absolute-form (`http://host/path`)
    /// target; `*` for `OPTIONS *`. Percent-escapes are decoded; a NUL, a control character, a bad
    /// escape, bytes that are not UTF-8, or a `.`/`..` segment in the path are refused (400).
    public static func split(_ target: String, method: String) throws(HTTPRefusal) -> (path: String, query: [HTTPField]) {
        var t = Substring(target)
        if t == "*" {
            guard method == "OPTIONS" else { throw HTTPRefusal(400, "bad_request", "the target * is for OPTIONS only") }
            return ("*", [])
        }
        let lower = t.lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
            let afterScheme = t[t.index(t.startIndex, offsetBy: lower.hasPrefix("http://") ? 7 : 8)...]
            t = afterScheme.firstIndex(of: "/").map { afterScheme[$0...] } ?? "/"
        }
        guard t.first == "/" else { throw HTTPRefusal(400, "bad_request", "the request target must start with /") }
        if let hash = t.firstIndex(of: "#") { t = t[..<hash] }
        let rawPath = t.firstIndex(of: "?").map { t[..<$0] } ?? t
        let rawQuery = t.firstIndex(of: "?").map { t[t.index(after: $0)...] } ?? ""
        guard let path = decode(rawPath, plusIsSpace: false) else {
            throw HTTPRefusal(400, "bad_request", "the path holds a bad percent-escape, a control character or bytes that are not UTF-8")
        }
        if path.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0 == "." || $0 == ".." }) {
            throw HTTPRefusal(400, "bad_request", "the path holds a . or .. segment")
        }
        var query: [HTTPField] = []
        for piece in rawQuery.split(separator: "&") where !piece.isEmpty {
            let eq = piece.firstIndex(of: "=")
            let key = decode(eq.map { piece[..<$0] } ?? piece, plusIsSpace: true)
            let value = eq.map { decode(piece[piece.index(after: $0)...], plusIsSpace: true) } ?? ""
            guard let key, let value else {
                throw HTTPRefusal(400, "bad_request", "the query holds a bad percent-escape, a control character or bytes that are not UTF-8")
            }
            query.append(HTTPField(key, value))
        }
        return (path, query)
    }

    /// Percent-decoding; nil for a bad escape, a decoded control character or invalid UTF-8.
    static func decode(_ s: Substring, plusIsSpace: Bool) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%") {
                guard it.count >= 2, let hi = hexValue(it[it.startIndex]), let lo = hexValue(it[it.startIndex + 1]) else { return nil }
                it = it.dropFirst(2)
                out.append(hi << 4 | lo)
            } else if b == UInt8(ascii: "+") && plusIsSpace {
                out.append(0x20)
            } else {
                out.append(b)
            }
        }
        guard !out.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { return nil }
        return String(validating: out, as: UTF8.self)
    }

    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
