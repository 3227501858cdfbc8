/// The message properties Herald reads and writes.
public struct AMQPProperties: Sendable, Equatable {
    public var contentType: String?
    public var messageID: String?
    public var persistent = false
    public var headers: [(String, String)] = []

    public init(contentType: String? = nil, messageID: String? = nil, persistent: Bool = false,
                headers: [(String, String)] = []) {
        self.contentType = contentType
        self.messageID = messageID
        self.persistent = persistent
        self.headers = headers
    }

    public static func == (a: AMQPProperties, b: AMQPProperties) -> Bool {
        a.contentType == b.contentType && a.messageID == b.messageID && a.persistent == b.persistent
            && a.headers.map(\.0) == b.headers.map(\.0) && a.headers.map(\.1) == b.headers.map(\.1)
    }

    public func header(_ name: String) -> String? { headers.first(where: { $0.0 == name })?.1 }
}

public struct AMQPDelivery: Sendable {
    public let tag: UInt64
    public let exchange: String
    public let routingKey: String
    public let redelivered: Bool
    public let properties: AMQPProperties
    public let body: [UInt8]
}

public enum AMQPEvent: Sendable {
    case delivery(AMQPDelivery)
    /// A publisher confirm: every tag up to `tag` when `multiple`.
    case confirm(tag: UInt64, multiple: Bool, ok: Bool)
    case timeout
}

/// A queue-declare argument value.
public enum AMQPArgument: Sendable {
    case bool(Bool)
    case string(String)
    case int(Int64)
}
