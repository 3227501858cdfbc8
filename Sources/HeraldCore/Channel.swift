/// Channel names: 1 to 128 characters of `A-Z a-z 0-9 _ . : @ -` (PROTOCOL.md, "Names").
///
/// A name outside that set is rejected, never truncated or mapped.
public enum ChannelName {
    public static let maxLength = 128

    /// Why a name was refused, as a sentence for error frames and dead-letter headers.
    public static func problem(_ name: some Collection<UInt8>) -> String? {
        if name.isEmpty { return "channel name is empty" }
        if name.count > maxLength { return "channel name is longer than \(maxLength) characters" }
        for byte in name where !isAllowed(byte) {
            return "channel name may only contain A-Z a-z 0-9 _ . : @ -"
        }
        return nil
    }

    public static func isValid(_ name: some Collection<UInt8>) -> Bool { problem(name) == nil }
    public static func isValid(_ name: String) -> Bool { problem(Array(name.utf8)) == nil }
    public static func problem(_ name: String) -> String? { problem(Array(name.utf8)) }

    @inline(__always)
    static func isAllowed(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }
}
