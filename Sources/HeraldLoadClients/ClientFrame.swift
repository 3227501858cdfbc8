/// A client's WebSocket frames (RFC 6455 5.2: final, masked, as a client sends everything) and the
/// byte search its parsers share.
enum ClientFrame {
    static func masked(opcode: UInt8, payload: some Collection<UInt8>, mask: [UInt8]) -> [UInt8] {
        var frame: [UInt8] = [0x80 | opcode]
        frame.reserveCapacity(14 + payload.count)
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { frame.append(UInt8(UInt64(payload.count) >> UInt64(shift) & 0xFF)) }
        }
        frame += mask
        for (i, b) in payload.enumerated() { frame.append(b ^ mask[i & 3]) }
        return frame
    }

    /// Where `needle` first starts in `haystack` at or after `from` (header ends, event ends).
    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int = 0) -> Int? {
        guard haystack.count - from >= needle.count, let first = needle.first else { return nil }
        var i = from
        while i <= haystack.count - needle.count {
            if haystack[i] == first && haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}
