/// Reading a field of a message frame without parsing it.
public enum FrameFields {
    /// The `time` field of a message frame (ms since the Unix epoch), if present.
    public static func time(_ frame: [UInt8]) -> UInt64? {
        let marker = Array(#","time":"#.utf8)
        guard frame.count >= marker.count else { return nil }
        var i = 0
        while i + marker.count <= frame.count {
            if frame[i] == marker[0] && frame[i..<(i + marker.count)].elementsEqual(marker) { break }
            i += 1
        }
        guard i + marker.count <= frame.count else { return nil }
        var v: UInt64 = 0
        var j = i + marker.count
        while j < frame.count, frame[j] >= 0x30, frame[j] <= 0x39 { v = v * 10 + UInt64(frame[j] - 0x30); j += 1 }
        return v
    }
}
