public struct AMQPError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// The AMQP reply code when the broker closed the channel or connection (403, 404, 406…).
    public let replyCode: Int
    public init(_ description: String, replyCode: Int = 0) {
        self.description = description
        self.replyCode = replyCode
    }
}

/// Where RabbitMQ is: `amqp://user:password@host:port/vhost` (vhost `/` when the path is `/` or empty).
public struct AMQPEndpoint: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port: Int32 = 5672
    public var user = "guest"
    public var password = "guest"
    public var vhost = "/"

    public init(url: String) throws(AMQPError) {
        guard url.hasPrefix("amqp://") else { throw AMQPError("AMQP URL must start with amqp:// (got \(url))") }
        var rest = Substring(url.dropFirst("amqp://".count))
        if let at = rest.lastIndex(of: "@") {
            let auth = rest[..<at].split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            user = Self.decode(String(auth[0]))
            if auth.count > 1 { password = Self.decode(String(auth[1])) }
            rest = rest[rest.index(after: at)...]
        }
        var hostPort = rest
        if let slash = rest.firstIndex(of: "/") {
            hostPort = rest[..<slash]
            let path = rest[rest.index(after: slash)...]
            vhost = path.isEmpty ? "/" : Self.decode(String(path))
        }
        if let colon = hostPort.lastIndex(of: ":") {
            guard let p = Int32(hostPort[hostPort.index(after: colon)...]) else { throw AMQPError("bad port in AMQP URL \(url)") }
            port = p
            hostPort = hostPort[..<colon]
        }
        if !hostPort.isEmpty { host = String(hostPort) }
    }

    static func decode(_ s: String) -> String {
        guard s.contains("%") else { return s }
        var out = [UInt8]()
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%"), i + 2 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                out.append(v)
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
