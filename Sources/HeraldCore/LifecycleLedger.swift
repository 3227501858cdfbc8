/// One node instance's lifecycle events as a state machine: it numbers the events, keeps what
/// the instance holds (its connections, their channels, the channels it occupies cluster-wide)
/// and says what the node's lifecycle worker must store in Redis and publish, in which order.
///
/// - Connections are stored in Redis before their events are published, and removed only after
///   their `disconnect` is confirmed, so whatever a consumer saw connect, a survivor can
///   disconnect if this node dies.
/// - A channel is *occupied* while any connection of the cluster is subscribed to it. Each node
///   adds itself to the channel's occupancy set when its first subscriber arrives and removes
///   itself `vacateDelay` after its last one left (unless one came back meanwhile); the Redis
///   script that makes the set go from empty to one, or from one to empty, hands out the version
///   that the `occupied` or `vacated` event carries (a cluster-wide counter, so a consumer orders
///   one channel's events from different nodes by it).
/// - Unconfirmed events are kept and published again after a failure, with the same numbers (a
///   consumer drops a seq it has already seen). Past `maxUnconfirmed` the oldest are dropped:
///   the consumer sees the gap and waits for the next `snapshot`.
///
/// No I/O, no clock: the worker passes the time in.
public struct LifecycleLedger {
    public struct Settings: Sendable {
        /// This process's instance (the prefix of its client ids) and its node name.
        public var instance: String
        public var node: String
        public var vacateDelayMicros: UInt64
        public var snapshotMicros: UInt64
        public var maxUnconfirmed = 100_000

        public init(instance: String, node: String, vacateDelayMicros: UInt64, snapshotMicros: UInt64) {
            (self.instance, self.node, self.vacateDelayMicros, self.snapshotMicros) = (instance, node, vacateDelayMicros, snapshotMicros)
        }
    }

    /// One write to this instance's connection hash in Redis (`entry` nil: remove the field).
    public struct StoreWrite: Equatable, Sendable {
        public let client: String
        public let entry: LifecycleClient?
    }

    /// A lost instance's state, as the reaping script handed it over.
    public struct Reaped: Equatable, Sendable {
        public var instance: String
        public var clients: [(client: String, entry: LifecycleClient)]
        public var vacated: [(channel: String, version: UInt64)]

        public init(instance: String, clients: [(client: String, entry: LifecycleClient)], vacated: [(channel: String, version: UInt64)]) {
            (self.instance, self.clients, self.vacated) = (instance, clients, vacated)
        }

        public static func == (a: Reaped, b: Reaped) -> Bool {
            a.instance == b.instance && a.clients.map(\.client) == b.clients.map(\.client) && a.clients.map(\.entry) == b.clients.map(\.entry)
                && a.vacated.map(\.channel) == b.vacated.map(\.channel) && a.vacated.map(\.version) == b.vacated.map(\.version)
        }
    }

    public let settings: Settings
    public private(set) var clients: [String: LifecycleClient] = [:]
    /// Local subscribers per channel.
    public private(set) var subscriberCounts: [String: Int] = [:]
    /// The channels this instance is in the occupancy set of, as far as Redis has confirmed.
    public private(set) var held: Set<String> = []
    /// Held channels without local subscribers: when each is released.
    private var releaseAt: [String: UInt64] = [:]
    /// Clients whose Redis entry must be written (present) or removed (after their disconnect).
    private var dirty: Set<String> = []
    /// Removals that wait for the confirmation of the `disconnect` with that seq.
    private var removals: [(seq: UInt64, client: String)] = []
    /// Published but not yet confirmed (`unsent` of them not yet published at all).
    private var unconfirmed: [LifecycleEvent] = []
    /// Lost instances this one emitted events for, with the seq of the last: what they left in
    /// Redis goes once RabbitMQ has confirmed it (`takeReleasable`).
    private var reapsInFlight: [(instance: String, lastSeq: UInt64)] = []
    private var releasable: [String] = []
    private var unsentFrom = 0
    public private(set) var seq: UInt64 = 0
    public private(set) var dropped = 0
    private var nextSnapshot: UInt64?

    public init(settings: Settings) { self.settings = settings }

    // MARK: Inputs

    public mutating func record(_ input: LifecycleInput, now: FanOut.Now) {
        switch input {
        case let .connected(client, user):
            guard clients[client] == nil else { return }
            clients[client] = LifecycleClient(user: user)
            dirty.insert(client)
            emit(.connect, now, [("client", .string(client)), ("user", user.map(JSONValue.string) ?? .null)])
        case let .authenticated(client, user):
            guard clients[client] != nil, clients[client]!.user != user else { return }
            clients[client]!.user = user
            dirty.insert(client)
            emit(.auth, now, [("client", .string(client)), ("user", user.map(JSONValue.string) ?? .null)])
        case let .subscribed(client, channel):
            guard clients[client] != nil, clients[client]!.channels.insert(channel).inserted else { return }
            dirty.insert(client)
            gained(channel)
            emit(.subscribe, now, [("client", .string(client)), ("user", clients[client]!.user.map(JSONValue.string) ?? .null),
                                   ("channel", .string(channel))])
        case let .unsubscribed(client, channel):
            guard clients[client]?.channels.remove(channel) != nil else { return }
            dirty.insert(client)
            lost(channel, now: now)
            emit(.unsubscribe, now, [("client", .string(client)), ("user", clients[client]!.user.map(JSONValue.string) ?? .null),
                                     ("channel", .string(channel))])
        case let .disconnected(client, code):
            guard let entry = clients.removeValue(forKey: client) else { return }
            for channel in entry.channels { lost(channel, now: now) }
            dirty.remove(client)
            emit(.disconnect, now, entry.fields(client: client) + [("code", .number(String(code)))])
            removals.append((seq, client))
        }
    }

    private mutating func gained(_ channel: String) {
        subscriberCounts[channel, default: 0] += 1
        releaseAt[channel] = nil
    }

    private mutating func lost(_ channel: String, now: FanOut.Now) {
        guard let count = subscriberCounts[channel] else { return }
        if count > 1 {
            subscriberCounts[channel] = count - 1
            return
        }
        subscriberCounts[channel] = nil
        if held.contains(channel) { releaseAt[channel] = now.monotonicMicros + settings.vacateDelayMicros }
    }

    // MARK: Occupancy

    /// The channels to add this instance to (subscribed, not held) and to remove it from (held,
    /// empty here since the vacate delay), sorted.
    public func occupancyWork(nowMicros: UInt64) -> (occupy: [String], release: [String]) {
        let occupy = subscriberCounts.keys.filter { !held.contains($0) }.sorted()
        let release = releaseAt.filter { $0.value <= nowMicros }.map(\.key).sorted()
        return (occupy, release)
    }

    /// Redis added this instance to `channel`'s set; `version` when the set had been empty.
    public mutating func occupied(_ channel: String, version: UInt64?, now: FanOut.Now) {
        held.insert(channel)
        if subscriberCounts[channel] == nil { releaseAt[channel] = now.monotonicMicros + settings.vacateDelayMicros }
        if let version { emit(.occupied, now, [("channel", .string(channel)), ("version", .number(String(version)))]) }
    }

    /// Redis removed this instance from `channel`'s set; `version` when the set is now empty.
    public mutating func released(_ channel: String, version: UInt64?, now: FanOut.Now) {
        held.remove(channel)
        releaseAt[channel] = nil
        if let version { emit(.vacated, now, [("channel", .string(channel)), ("version", .number(String(version)))]) }
    }

    /// The next time `occupancyWork` or `snapshotDue` has something to do.
    public var nextDueMicros: UInt64? {
        [releaseAt.values.min(), nextSnapshot].compactMap { $0 }.min()
    }

    // MARK: Leases and reaps

    /// This instance's lease had run out (or this is its first heartbeat): a survivor may have
    /// reaped it, so everything is stored and occupied again, and a snapshot tells consumers
    /// the instance's state.
    public mutating func leaseLapsed(now: FanOut.Now) {
        dirty.formUnion(clients.keys)
        held = []
        releaseAt = [:]
        snapshot(now)
    }

    /// Emits, on a lost instance's behalf, a `node_lost`, then a `disconnect` (code 1006, with
    /// `lost`) for each of its connections and a `vacated` for each channel it was the last in.
    public mutating func reaped(_ lost: Reaped, now: FanOut.Now) {
        defer { reapsInFlight.append((instance: lost.instance, lastSeq: seq)) }
        emit(.nodeLost, now, [("lost", .string(lost.instance)), ("clients", .number(String(lost.clients.count))),
                              ("vacated", .number(String(lost.vacated.count)))])
        for (client, entry) in lost.clients.sorted(by: { $0.client < $1.client }) {
            emit(.disconnect, now, entry.fields(client: client) + [("code", .number("1006")), ("lost", .string(lost.instance))])
        }
        for (channel, version) in lost.vacated {
            emit(.vacated, now, [("channel", .string(channel)), ("version", .number(String(version))), ("lost", .string(lost.instance))])
        }
    }

    /// The instance stops: every connection disconnects (1001) and every held channel is
    /// released at once.
    public mutating func farewell(now: FanOut.Now) {
        for client in clients.keys.sorted() { record(.disconnected(client: client, code: 1001), now: now) }
        for channel in held { releaseAt[channel] = now.monotonicMicros }
    }

    // MARK: Snapshots

    /// Emits the periodic snapshot when it is due.
    public mutating func snapshotDue(now: FanOut.Now) {
        if let next = nextSnapshot, next <= now.monotonicMicros { snapshot(now) }
    }

    private mutating func snapshot(_ now: FanOut.Now) {
        let list = clients.keys.sorted().map { JSONValue.object(clients[$0]!.fields(client: $0)) }
        emit(.snapshot, now, [("clients", .array(list)), ("occupied", .array(held.sorted().map(JSONValue.string)))])
        nextSnapshot = now.monotonicMicros + settings.snapshotMicros
    }

    // MARK: Redis and RabbitMQ

    /// The connection-hash writes to make before the events not yet sent are published; the
    /// caller hands them back with `storeFailed` if Redis did not take them.
    public mutating func takeStoreWrites() -> [StoreWrite] {
        let writes = dirty.sorted().map { StoreWrite(client: $0, entry: clients[$0]) }
        dirty = []
        return writes
    }

    public mutating func storeFailed(_ writes: [StoreWrite]) {
        for w in writes where clients[w.client] != nil || w.entry == nil { dirty.insert(w.client) }
    }

    /// Events to publish now (after the store writes succeeded).
    public var unsent: ArraySlice<LifecycleEvent> { unconfirmed[unsentFrom...] }

    public mutating func sent() { unsentFrom = unconfirmed.count }

    /// RabbitMQ confirmed every event through `seq`: forget them, and let the connections they
    /// disconnected leave Redis.
    public mutating func confirmed(through seq: UInt64) {
        let done = unconfirmed.prefix { $0.seq <= seq }.count
        unconfirmed.removeFirst(done)
        unsentFrom = max(0, unsentFrom - done)
        while let first = removals.first, first.seq <= seq {
            removals.removeFirst()
            if clients[first.client] == nil { dirty.insert(first.client) }
        }
        while let first = reapsInFlight.first, first.lastSeq <= seq {
            reapsInFlight.removeFirst()
            releasable.append(first.instance)
        }
    }

    /// Lost instances whose every event is confirmed: their claim and what they left in Redis
    /// may go. The caller hands them back with `releaseFailed` if Redis did not take it.
    public mutating func takeReleasable() -> [String] {
        defer { releasable = [] }
        return releasable
    }

    public mutating func releaseFailed(_ instances: [String]) { releasable = instances + releasable }

    /// A publish failed or was not confirmed: every unconfirmed event goes again.
    public mutating func publishFailed() { unsentFrom = 0 }

    public var unconfirmedCount: Int { unconfirmed.count }

    private mutating func emit(_ kind: LifecycleEvent.Kind, _ now: FanOut.Now, _ fields: [(String, JSONValue)]) {
        seq += 1
        var body: [UInt8] = []
        JSON.encode(.object([("event", .string(kind.rawValue)), ("instance", .string(settings.instance)),
                             ("node", .string(settings.node)), ("seq", .number(String(seq))),
                             ("time", .number(String(now.wallMillis)))] + fields), to: &body)
        unconfirmed.append(LifecycleEvent(kind: kind, seq: seq, body: body))
        if nextSnapshot == nil { nextSnapshot = now.monotonicMicros + settings.snapshotMicros }
        if unconfirmed.count > settings.maxUnconfirmed {
            let excess = unconfirmed.count - settings.maxUnconfirmed
            unconfirmed.removeFirst(excess)
            unsentFrom = max(0, unsentFrom - excess)
            dropped += excess
        }
    }
}
