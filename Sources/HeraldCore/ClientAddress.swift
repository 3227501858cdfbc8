/// IP addresses and CIDR ranges, parsed without the C library, for the trusted-proxy rules.
public struct IPAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// 16 bytes; an IPv4 address is stored IPv4-mapped (`::ffff:a.b.c.d`).
    public let bytes: [UInt8]

    public var isIPv4: Bool { bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF }

    /// Parses `1.2.3.4`, `::1`, `2001:db8::7`, `::ffff:1.2.3.4` and `[::1]`; nil for anything else.
    public init?(_ text: some StringProtocol) {
        var s = Substring(text)
        if s.hasPrefix("["), s.hasSuffix("]") { s = s.dropFirst().dropLast() }
        if let v4 = Self.parseIPv4(s) {
            bytes = Array(repeating: 0, count: 10) + [0xFF, 0xFF] + v4
        } else if let v6 = Self.parseIPv6(s) {
            bytes = v6
        } else {
            return nil
        }
    }

    public var description: String {
        if isIPv4 { return bytes[12...].map(String.init).joined(separator: ".") }
        var groups: [UInt16] = []
        for i in stride(from: 0, to: 16, by: 2) { groups.append(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1])) }
        // The longest run of two or more zero groups becomes "::" (RFC 5952).
        var best = (start: -1, length: 0), run = (start: -1, length: 0)
        for (i, g) in groups.enumerated() {
            if g == 0 {
                run = run.start < 0 ? (i, 1) : (run.start, run.length + 1)
                if run.length > best.length { best = run }
            } else {
                run = (-1, 0)
            }
        }
        let hex = groups.map { String($0, radix: 16) }
        guard best.length >= 2 else { return hex.joined(separator: ":") }
        return hex[..<best.start].joined(separator: ":") + "::" + hex[(best.start + best.length)...].joined(separator: ":")
    }

    static func parseIPv4(_ s: Substring) -> [UInt8]? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard (1...3).contains(p.count), p.allSatisfy({ $0.isASCII && $0.isNumber }),
                  !(p.count > 1 && p.hasPrefix("0")), let v = UInt8(p) else { return nil }
            out.append(v)
        }
        return out
    }

    static func parseIPv6(_ s: Substring) -> [UInt8]? {
        guard s.contains(":"), s.count <= 45 else { return nil }
        let chars = Array(s.utf8)
        var doubleColons: [Int] = []
        for i in 0..<(chars.count - 1) where chars[i] == UInt8(ascii: ":") && chars[i + 1] == UInt8(ascii: ":") { doubleColons.append(i) }
        let halves: [String]
        switch doubleColons.count {
        case 0: halves = [String(s)]
        case 1: halves = [String(decoding: chars[..<doubleColons[0]], as: UTF8.self),
                          String(decoding: chars[(doubleColons[0] + 2)...], as: UTF8.self)]
        default: return nil  // "::" twice, or ":::"
        }
        func groups(_ part: String, allowIPv4Tail: Bool) -> [UInt8]? {
            if part.isEmpty { return [] }
            var out: [UInt8] = []
            let items = part.split(separator: ":", omittingEmptySubsequences: false)
            for (i, item) in items.enumerated() {
                if allowIPv4Tail, i == items.count - 1, item.contains(".") {
                    guard let v4 = parseIPv4(item) else { return nil }
                    out += v4
                } else {
                    guard (1...4).contains(item.count), let v = UInt16(item, radix: 16) else { return nil }
                    out += [UInt8(v >> 8), UInt8(v & 0xFF)]
                }
            }
            return out
        }
        if halves.count == 1 {
            guard let all = groups(halves[0], allowIPv4Tail: true), all.count == 16 else { return nil }
            return all
        }
        guard let head = groups(halves[0], allowIPv4Tail: false), let tail = groups(halves[1], allowIPv4Tail: true),
              head.count + tail.count <= 14 else { return nil }
        return head + Array(repeating: 0, count: 16 - head.count - tail.count) + tail
    }
}

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address (`192.168.1.10`).
public struct AddressRange: Equatable, Sendable {
    public let base: IPAddress
    public let prefixBits: Int   // of the 128-bit form

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let address = IPAddress(parts[0]) else { return nil }
        let maxBits = address.isIPv4 ? 32 : 128
        var bits = maxBits
        if parts.count == 2 {
            guard let b = Int(parts[1]), (0...maxBits).contains(b), parts[1].allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            bits = b
        }
        base = address
        prefixBits = address.isIPv4 ? 96 + bits : bits
    }

    public func contains(_ address: IPAddress) -> Bool {
        var left = prefixBits
        for i in 0..<16 where left > 0 {
            let mask: UInt8 = left >= 8 ? 0xFF : UInt8(0xFF) << UInt8(8 - left)
            if (address.bytes[i] & mask) != (base.bytes[i] & mask) { return false }
            left -= 8
        }
        return true
    }
}

/// Which address a connection counts as, for per-address limits and logs.
public enum ClientAddress {
    /// The TCP peer, unless it is a trusted proxy: then the rightmost `X-Forwarded-For` entry that
    /// is not itself a trusted proxy (proxies append the address they saw, so entries to its left
    /// are whatever the client claimed and are ignored). A malformed entry met on the way, or a
    /// header that names only trusted proxies, leaves the TCP peer.
    public static func resolve(peer: String, forwardedFor: String?, trusted: [AddressRange]) -> String {
        guard !trusted.isEmpty, let forwardedFor, let peerAddress = IPAddress(peer),
              trusted.contains(where: { $0.contains(peerAddress) }) else { return peer }
        for entry in forwardedFor.split(separator: ",").reversed() {
            let text = entry.trimmingSpaces
            guard let address = IPAddress(text) else { return peer }
            if !trusted.contains(where: { $0.contains(address) }) { return address.description }
        }
        return peer
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return s
    }
}
