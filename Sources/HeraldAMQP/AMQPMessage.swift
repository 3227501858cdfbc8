/// The message properties Herald reads and writes.
public struct AMQPProperties: Sendable, Equatable {
    public var contentType: String?
    public var messageID: String?
    public var persistent = false
    public var headers: [(String, String)] = []
    /// Request/reply: where the answer goes, which request it answers, and how many ms the
    /// message may wait in a queue before RabbitMQ drops it (a decimal string, as AMQP has it).
    public var replyTo: String?
    public var correlationID: String?
    public var expiration: String?

    public init(contentType: String? = nil, messageID: String? = nil, persistent: Bool = false,
                headers: [(String, String)] = [], replyTo: String? = nil, correlationID: String? = nil, expiration: String? = nil) {
        self.contentType = contentType
        self.messageID = messageID
        self.persistent = persistent
        self.headers = headers
        self.replyTo = replyTo
        self.correlationID = correlationID
        self.expiration = expiration
    }

    public static func == (a: AMQPProperties, b: AMQPProperties) -> Bool {
        a.contentType == b.contentType && a.messageID == b.messageID && a.persistent == b.persistent
            && a.replyTo == b.replyTo && a.correlationID == b.correlationID && a.expiration == b.expiration
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

/// A `mandatory` publish RabbitMQ could not route (`basic.return`, before its confirm).
public struct AMQPReturn: Sendable {
    /// 312 NO_ROUTE: no queue is bound for its routing key.
    public let replyCode: Int
    public let replyText: String
    public let exchange: String
    public let routingKey: String
    public let properties: AMQPProperties
}

public enum AMQPEvent: Sendable {
    case delivery(AMQPDelivery)
    /// A publisher confirm: every tag up to `tag` when `multiple`.
    case confirm(tag: UInt64, multiple: Bool, ok: Bool)
    /// A mandatory publish came back unrouted.
    case returned(AMQPReturn)
    /// RabbitMQ stopped reading this connection's publishes (a memory or disk alarm), and why;
    /// `.unblocked` when it reads them again.
    case blocked(reason: String)
    case unblocked
    case timeout
}

/// A queue-declare argument value.
public enum AMQPArgument: Sendable {
    case bool(Bool)
    case string(String)
    case int(Int64)
}
