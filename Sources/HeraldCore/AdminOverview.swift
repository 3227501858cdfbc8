/// What the admin page shows, assembled without I/O from the node registry: each node's latest
/// heartbeat (a JSON object it stores in Redis every second) and when Redis last saw one.
public enum AdminOverview {
    /// A node whose last heartbeat is older than this is listed as lost.
    public static let lostAfterMillis: UInt64 = 5_000
    /// The dead letters and channels the overview lists at most.
    public static let maxDeadLetters = 20
    public static let maxChannels = 10

    /// One node as the registry knows it: its id, when it last beat, and the beat (nil once the
    /// beat's key has expired but the node is still in the registry's sorted set).
    public struct Node: Sendable {
        public var id: String
        public var lastSeenMillis: UInt64
        public var beat: JSONValue?
        public init(id: String, lastSeenMillis: UInt64, beat: JSONValue?) {
            self.id = id
            self.lastSeenMillis = lastSeenMillis
            self.beat = beat
        }
    }

    /// A counter's rate per second between two readings `millis` apart (0 for no time, and for
    /// a counter that went backwards).
    public static func perSecond(_ now: Int, _ before: Int, overMillis millis: UInt64) -> Double {
        guard millis > 0, now >= before else { return 0 }
        return rounded(Double(now - before) * 1000 / Double(millis))
    }

    /// One decimal: what a person reads on the page.
    public static func rounded(_ x: Double) -> Double { (x * 10).rounded() / 10 }

    /// The busiest channels by messages over `millis`: the `top` highest rates, ties by name.
    public static func busiest(_ counts: [String: Int], overMillis millis: UInt64, top: Int = maxChannels) -> [(channel: String, perSecond: Double)] {
        counts.filter { $0.value > 0 }
            .sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            .prefix(top)
            .map { ($0.key, perSecond($0.value, 0, overMillis: millis)) }
    }

    /// Redis `INFO` text (`key:value` lines, `# Section` headers) as a dictionary.
    public static func info(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            out[String(line[..<colon])] = String(line[line.index(after: colon)...])
        }
        return out
    }

    /// The overview the admin page polls: every node (up or lost) with its heartbeat, the
    /// deployment's totals, which node sequences, the busiest channels, the latest dead letters
    /// of every node (newest first), and the Redis and RabbitMQ status `servedBy` saw.
    public static func render(servedBy: String, nowMillis: UInt64, nodes: [Node], redis: JSONValue, rabbitmq: JSONValue) -> [UInt8] {
        var listed: [JSONValue] = []
        var up = 0, connections = 0, subscriptions = 0
        var messagesIn = 0.0, deliveries = 0.0
        var sequencer: JSONValue = .null
        var channels: [String: Double] = [:]
        var deadLetters: [(at: UInt64, order: Int, entry: JSONValue)] = []
        for node in nodes.sorted(by: { $0.id < $1.id }) {
            let age = nowMillis > node.lastSeenMillis ? nowMillis - node.lastSeenMillis : 0
            let alive = node.beat != nil && age <= lostAfterMillis
            var members: [(String, JSONValue)] = [
                ("id", .string(node.id)), ("state", .string(alive ? "up" : "lost")),
                ("last_seen_ms", .number(String(node.lastSeenMillis))), ("age_ms", .number(String(age))),
            ]
            if case let .object(beat)? = node.beat {
                members += beat.filter { key, _ in !["id", "dead_letters", "channels"].contains(key) }
                // A node lists its dead letters oldest first; several may share a millisecond.
                for (order, item) in (node.beat?["dead_letters"].flatMap(array) ?? []).enumerated() {
                    guard case let .object(entry) = item else { continue }
                    let at = item["at_ms"]?.unsignedValue ?? 0
                    deadLetters.append((at, order, .object(entry + [("node", .string(node.id))])))
                }
            }
            listed.append(.object(members))
            guard alive, let beat = node.beat else { continue }
            up += 1
            connections += int(beat["connections"])
            subscriptions += int(beat["subscriptions"])
            messagesIn += double(beat["messages_in_per_second"])
            deliveries += double(beat["deliveries_per_second"])
            if beat["sequencer"] == .bool(true) { sequencer = .string(node.id) }
            // The role may move between nodes within a second: every node's share counts.
            for case let .object(c) in beat["channels"].flatMap(array) ?? [] {
                if let name = JSONValue.object(c)["channel"]?.stringValue { channels[name, default: 0] += double(JSONValue.object(c)["per_second"]) }
            }
        }
        let busiest = channels.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(maxChannels)
        let newest = deadLetters.sorted { $0.at != $1.at ? $0.at > $1.at : $0.order > $1.order }.prefix(maxDeadLetters)
        let overview = JSONValue.object([
            ("served_by", .string(servedBy)),
            ("generated_ms", .number(String(nowMillis))),
            ("sequencer", sequencer),
            ("totals", .object([
                ("nodes_up", .number(String(up))), ("nodes_lost", .number(String(nodes.count - up))),
                ("connections", .number(String(connections))), ("subscriptions", .number(String(subscriptions))),
                ("messages_in_per_second", number(messagesIn)), ("deliveries_per_second", number(deliveries)),
            ])),
            ("nodes", .array(listed)),
            ("channels", .array(busiest.map { .object([("channel", .string($0.key)), ("per_second", number($0.value))]) })),
            ("dead_letters", .array(newest.map(\.entry))),
            ("redis", redis),
            ("rabbitmq", rabbitmq),
        ])
        var out: [UInt8] = []
        JSON.encode(overview, to: &out)
        return out
    }

    /// A JSON number for a rate: integral rates without a fraction.
    public static func number(_ x: Double) -> JSONValue {
        let r = rounded(x)
        return .number(r == r.rounded() && abs(r) < 1e15 ? String(Int(r)) : String(r))
    }

    private static func array(_ value: JSONValue) -> [JSONValue]? {
        if case let .array(items) = value { return items }
        return nil
    }

    private static func int(_ value: JSONValue?) -> Int {
        if case let .number(text)? = value { return Int(text) ?? Int(Double(text) ?? 0) }
        return 0
    }

    private static func double(_ value: JSONValue?) -> Double {
        if case let .number(text)? = value { return Double(text) ?? 0 }
        return 0
    }

    /// `GET /api/info`: each node's id, state, version, address and load, from the heartbeats.
    public static func info(nodes: [Node], servedBy: String, nowMillis: UInt64) -> JSONValue {
        let keep = ["version", "instance", "listen", "started_ms", "ws_threads", "connections", "subscriptions", "sequencer", "amqp", "redis"]
        return .object([
            ("served_by", .string(servedBy)),
            ("nodes", .array(nodes.map { node in
                let age = nowMillis > node.lastSeenMillis ? nowMillis - node.lastSeenMillis : 0
                let alive = node.beat != nil && age <= lostAfterMillis
                var members: [(String, JSONValue)] = [("id", .string(node.id)), ("state", .string(alive ? "up" : "lost")),
                                                      ("last_seen_ms", .number(String(node.lastSeenMillis)))]
                for key in keep { if let value = node.beat?[key] { members.append((key, value)) } }
                return .object(members)
            })),
        ])
    }
}
