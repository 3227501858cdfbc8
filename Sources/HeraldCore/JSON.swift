/// A small, strict JSON reader and writer for client frames and published bodies.
///
/// Strict RFC 8259: UTF-8 only, no trailing commas, no control characters in strings,
/// nesting bounded by `maxDepth` so hostile input cannot exhaust the stack.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// A number, with its exact source text (so integers are never rounded through Double).
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    public subscript(key: String) -> JSONValue? {
        guard case let .object(members) = self else { return nil }
        return members.last(where: { $0.0 == key })?.1
    }

    public var stringValue: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    /// The value as a non-negative integer, if it is written as one (no fraction, no exponent).
    public var unsignedValue: UInt64? {
        guard case let .number(text) = self else { return nil }
        return UInt64(text)
    }
}

public struct JSONError: Error, Equatable, Sendable {
    public let message: String
    public let offset: Int
}

public enum JSON {
    public static let maxDepth = 64

    /// Parses one JSON text (surrounding whitespace allowed).
    /// A value as compact JSON (numbers as they were written).
    public static func encode(_ value: JSONValue, to out: inout [UInt8]) {
        switch value {
        case .null: out += Array("null".utf8)
        case let .bool(b): out += Array((b ? "true" : "false").utf8)
        case let .number(text): out += Array(text.utf8)
        case let .string(s): appendString(s.utf8, to: &out)
        case let .array(items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                encode(item, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case let .object(members):
            out.append(UInt8(ascii: "{"))
            for (i, (key, item)) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                appendString(key.utf8, to: &out)
                out.append(UInt8(ascii: ":"))
                encode(item, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    public static func parse(_ bytes: [UInt8]) throws(JSONError) -> JSONValue {
        var parser = Parser(bytes: bytes, build: true)
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        if parser.index != bytes.count { throw parser.fail("unexpected data after the JSON value") }
        return value
    }

    /// Validates a JSON text and returns it without insignificant whitespace, or throws.
    ///
    /// The result never contains a raw newline, so it can sit in a newline-separated batch.
    public static func minify(_ bytes: [UInt8]) throws(JSONError) -> [UInt8] {
        var parser = Parser(bytes: bytes, build: false)
        parser.skipWhitespace()
        _ = try parser.value(depth: 0)
        parser.skipWhitespace()
        if parser.index != bytes.count { throw parser.fail("unexpected data after the JSON value") }
        var out = [UInt8]()
        out.reserveCapacity(bytes.count)
        var inString = false
        var escaped = false
        for b in bytes {
            if inString {
                out.append(b)
                if escaped { escaped = false } else if b == 0x5C { escaped = true } else if b == 0x22 { inString = false }
            } else if b == 0x22 {
                inString = true
                out.append(b)
            } else if !(b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09) {
                out.append(b)
            }
        }
        return out
    }

    /// Appends `string` as a JSON string literal (quotes included).
    public static func appendString(_ string: some Sequence<UInt8>, to out: inout [UInt8]) {
        out.append(0x22)
        for b in string {
            switch b {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0x00..<0x20, 0x7F:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 0xF)]])
            default: out.append(b)
            }
        }
        out.append(0x22)
    }

    public static func quoted(_ string: String) -> String {
        var out = [UInt8]()
        appendString(string.utf8, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    struct Parser {
        let bytes: [UInt8]
        let build: Bool
        var index = 0

        init(bytes: [UInt8], build: Bool) {
            self.bytes = bytes
            self.build = build
        }

        func fail(_ message: String) -> JSONError { JSONError(message: message, offset: index) }

        mutating func skipWhitespace() {
            while index < bytes.count {
                let b = bytes[index]
                if b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { index += 1 } else { break }
            }
        }

        mutating func value(depth: Int) throws(JSONError) -> JSONValue {
            guard depth < JSON.maxDepth else { throw fail("JSON nested deeper than \(JSON.maxDepth) levels") }
            guard index < bytes.count else { throw fail("unexpected end of JSON") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case 0x22: return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw fail("unexpected character in JSON")
            }
        }

        mutating func literal(_ word: String) throws(JSONError) {
            var i = index
            for expected in word.utf8 {
                guard i < bytes.count else { throw fail("unexpected end of JSON") }
                if bytes[i] != expected { throw fail("invalid literal") }
                i += 1
            }
            index = i
        }

        mutating func number() throws(JSONError) -> JSONValue {
            let start = index
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { throw fail("invalid number") }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
            } else {
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard index < bytes.count, isDigit(bytes[index]) else { throw fail("invalid number") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard index < bytes.count, isDigit(bytes[index]) else { throw fail("invalid number") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            return build ? .number(String(decoding: bytes[start..<index], as: UTF8.self)) : .null
        }

        func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

        /// A string literal. Without `build` (validation only) nothing is allocated unless the
        /// string has non-ASCII bytes, which are then checked as UTF-8 in one go; escapes are
        /// checked the same way in both modes.
        mutating func string() throws(JSONError) -> String {
            index += 1 // opening quote
            let start = index
            var ascii = true
            var out: [UInt8]? = build ? [] : nil
            while true {
                guard index < bytes.count else { throw fail("unterminated string") }
                let b = bytes[index]
                switch b {
                case 0x22:
                    index += 1
                    if let out {
                        guard let s = String(validating: out, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
                        return s
                    }
                    if !ascii && String(validating: bytes[start..<(index - 1)], as: UTF8.self) == nil {
                        throw fail("string is not valid UTF-8")
                    }
                    return ""
                case 0x5C:
                    index += 1
                    guard index < bytes.count else { throw fail("unterminated escape") }
                    let e = bytes[index]
                    index += 1
                    switch e {
                    case 0x22: out?.append(0x22)
                    case 0x5C: out?.append(0x5C)
                    case 0x2F: out?.append(0x2F)
                    case UInt8(ascii: "b"): out?.append(0x08)
                    case UInt8(ascii: "f"): out?.append(0x0C)
                    case UInt8(ascii: "n"): out?.append(0x0A)
                    case UInt8(ascii: "r"): out?.append(0x0D)
                    case UInt8(ascii: "t"): out?.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800...0xDBFF).contains(scalar) {
                            guard index + 1 < bytes.count, bytes[index] == 0x5C, bytes[index + 1] == UInt8(ascii: "u") else {
                                throw fail("unpaired surrogate in string")
                            }
                            index += 2
                            let low = try hex4()
                            guard (0xDC00...0xDFFF).contains(low) else { throw fail("unpaired surrogate in string") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00...0xDFFF).contains(scalar) {
                            throw fail("unpaired surrogate in string")
                        }
                        guard let u = Unicode.Scalar(scalar) else { throw fail("invalid unicode escape") }
                        if out != nil { out!.append(contentsOf: Array(String(Character(u)).utf8)) }
                    default: throw fail("invalid escape in string")
                    }
                case 0x00..<0x20:
                    throw fail("control character in string")
                default:
                    if b >= 0x80 { ascii = false }
                    out?.append(b)
                    index += 1
                }
            }
        }

        mutating func hex4() throws(JSONError) -> UInt32 {
            guard index + 4 <= bytes.count else { throw fail("invalid unicode escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[index]
                let d: UInt32
                switch b {
                case 0x30...0x39: d = UInt32(b - 0x30)
                case 0x41...0x46: d = UInt32(b - 0x41 + 10)
                case 0x61...0x66: d = UInt32(b - 0x61 + 10)
                default: throw fail("invalid unicode escape")
                }
                v = v << 4 | d
                index += 1
            }
            return v
        }

        mutating func array(depth: Int) throws(JSONError) -> JSONValue {
            index += 1
            var items = [JSONValue]()
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
            while true {
                skipWhitespace()
                let v = try value(depth: depth + 1)
                if build { items.append(v) }
                skipWhitespace()
                guard index < bytes.count else { throw fail("unterminated array") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
                throw fail("expected , or ] in array")
            }
        }

        mutating func object(depth: Int) throws(JSONError) -> JSONValue {
            index += 1
            var members = [(String, JSONValue)]()
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == 0x22 else { throw fail("expected a string key in object") }
                let key = try string()
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw fail("expected : in object") }
                index += 1
                skipWhitespace()
                let v = try value(depth: depth + 1)
                if build { members.append((key, v)) }
                skipWhitespace()
                guard index < bytes.count else { throw fail("unterminated object") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
                throw fail("expected , or } in object")
            }
        }
    }
}

extension JSON {
    /// The first occurrence of `marker` in `bytes[range]`, for reading a known field of compact
    /// JSON without parsing it all.
    public static func find(_ marker: [UInt8], in bytes: [UInt8], range: Range<Int>) -> Int? {
        guard let first = marker.first, range.count >= marker.count else { return nil }
        let span = bytes.span, needle = marker.span
        var i = range.lowerBound
        let last = range.upperBound - needle.count
        while i <= last {
            if span[i] == first {
                var j = 1
                while j < needle.count && span[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }

    /// The unsigned integer right after the first `marker` (such as `"seq":`) in `bytes[range]`.
    public static func unsignedAfter(_ marker: [UInt8], in bytes: [UInt8], range: Range<Int>) -> UInt64? {
        guard let at = find(marker, in: bytes, range: range) else { return nil }
        var i = at + marker.count
        var value: UInt64 = 0
        var digits = 0
        while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
            value = value &* 10 &+ UInt64(bytes[i] - 0x30)
            i += 1
            digits += 1
        }
        return digits > 0 ? value : nil
    }
}
