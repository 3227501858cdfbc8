/// Compares two byte strings in time that depends only on their lengths, so a secret (an API
/// key, a signature) cannot be guessed byte by byte from how long a refusal takes.
public func constantTimeEquals(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
    var diff: UInt8 = a.count == b.count ? 0 : 1
    var i = a.makeIterator(), j = b.makeIterator()
    while true {
        let x = i.next(), y = j.next()
        if x == nil && y == nil { break }
        diff |= (x ?? 0) ^ (y ?? 0)
    }
    return diff == 0
}

/// The same for strings, byte by byte of their UTF-8.
public func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    constantTimeEquals(a.utf8, b.utf8)
}
