/// Lifecycle events: what a backend hears about connections and channels (`--lifecycle-events`),
/// published to the durable topic exchange `<exchange>.events` with the event's name as routing
/// key. Every event names the node instance that emitted it and that instance's own sequence
/// number (1, 2, 3, … with no gap while the instance lives), so a consumer can tell it missed one
/// and rebuild exact state from the instance's next `snapshot`.
///
/// The schema is in docs/PROTOCOL.md ("Lifecycle events").

/// What the WebSocket side reports to the node's `LifecycleLedger`.
public enum LifecycleInput: Equatable, Sendable {
    /// A WebSocket connection was accepted (its token's `sub`, if it came with one).
    case connected(client: String, user: String?)
    /// A token was accepted after the connection opened (`{"op":"auth"}`): the user may change.
    case authenticated(client: String, user: String?)
    case subscribed(client: String, channel: String)
    case unsubscribed(client: String, channel: String)
    /// The connection is gone, with the close code sent or received (1006 when none was).
    case disconnected(client: String, code: UInt16)
}

/// One event as published: its routing key, its instance sequence number and its JSON body.
public struct LifecycleEvent: Equatable, Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case connect, auth, subscribe, unsubscribe, disconnect, occupied, vacated, snapshot
        /// A survivor reaped an instance whose lease ran out; the `disconnect`s and `vacated`s it
        /// emits on the lost instance's behalf follow.
        case nodeLost = "node_lost"
    }

    public let kind: Kind
    public let seq: UInt64
    public let body: [UInt8]

    public var routingKey: String { kind.rawValue }
}

/// What a node keeps in Redis for each of its connections, so a survivor can emit its
/// `disconnect`s if the node dies: `{"user":…,"channels":[…]}`.
public struct LifecycleClient: Equatable, Sendable {
    public var user: String?
    public var channels: Set<String>

    public init(user: String?, channels: Set<String> = []) {
        self.user = user
        self.channels = channels
    }

    public var encoded: [UInt8] {
        var out: [UInt8] = []
        JSON.encode(.object([("user", user.map(JSONValue.string) ?? .null),
                             ("channels", .array(channels.sorted().map(JSONValue.string)))]), to: &out)
        return out
    }

    /// The entry as stored, or nil for one that is not (never crashes on what Redis holds).
    public static func decode(_ bytes: [UInt8]) -> LifecycleClient? {
        guard let value = try? JSON.parse(bytes), case let .array(list)? = value["channels"] else { return nil }
        let user: String?
        switch value["user"] {
        case let .string(s)?: user = s
        case .null?, nil: user = nil
        default: return nil
        }
        var channels = Set<String>()
        for item in list {
            guard let channel = item.stringValue else { return nil }
            channels.insert(channel)
        }
        return LifecycleClient(user: user, channels: channels)
    }

    /// The JSON object of a `snapshot`'s client list and a reaped `disconnect`.
    func fields(client: String) -> [(String, JSONValue)] {
        [("client", .string(client)), ("user", user.map(JSONValue.string) ?? .null),
         ("channels", .array(channels.sorted().map(JSONValue.string)))]
    }
}
