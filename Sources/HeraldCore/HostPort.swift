/// `HOST:PORT` as operators write listen addresses and sentinels (`127.0.0.1:9090`,
/// `[::1]:9090`, `redis-a:26379`).
public enum HostPort {
    /// The host (brackets of an IPv6 literal removed) and a port from 1 to 65535; nil otherwise.
    public static func parse(_ text: String) -> (host: String, port: Int32)? {
        guard let colon = text.lastIndex(of: ":"), colon != text.startIndex,
              let port = Int32(text[text.index(after: colon)...]), (1...65_535).contains(port) else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }) else { return nil }
        return (String(host), port)
    }
}
