/// UTF-8 validation fed piece by piece (RFC 3629, as RFC 6455 §8.1 requires of text messages),
/// so that a WebSocket text message can be refused at the first invalid byte, before the rest of
/// it arrives ("fail fast"), whatever the fragment boundaries.
public struct UTF8Validator: Sendable {
    /// Continuation bytes still expected in the current sequence.
    private var pending = 0
    /// The range the next byte must fall in (narrower than 0x80...0xBF right after E0, ED, F0, F4).
    private var low: UInt8 = 0x80
    private var high: UInt8 = 0xBF
    /// Set once an invalid byte was seen.
    public private(set) var failed = false

    public init() {}

    /// Feeds bytes; false once the input so far cannot be the start of valid UTF-8.
    @discardableResult
    public mutating func feed<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        guard !failed else { return false }
        for b in bytes {
            if pending > 0 {
                guard b >= low && b <= high else { failed = true; return false }
                pending -= 1
                low = 0x80
                high = 0xBF
                continue
            }
            switch b {
            case 0x00...0x7F: continue
            case 0xC2...0xDF: pending = 1
            case 0xE0: pending = 2; low = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: pending = 2
            case 0xED: pending = 2; high = 0x9F
            case 0xF0: pending = 3; low = 0x90
            case 0xF1...0xF3: pending = 3
            case 0xF4: pending = 3; high = 0x8F
            default: failed = true; return false
            }
        }
        return true
    }

    /// Everything fed is valid and no sequence is left unfinished.
    public var isComplete: Bool { !failed && pending == 0 }

    /// Whether `bytes` are valid UTF-8 as a whole.
    public static func isValid<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        var v = UTF8Validator()
        return v.feed(bytes) && v.isComplete
    }
}
