/// One node's side of presence, decided without I/O: which of its connections are members of
/// which presence channel, what it has told the cluster, and what to tell it next.
///
/// The node's WebSocket threads report joins and leaves as they happen; once per tick the
/// announcer hands out one `PresenceChange` per channel that changed: the difference between
/// the node's members now and what it announced before. Joins and leaves within a tick are so
/// merged into one change (and one frame per subscriber), and a connection that joins and leaves
/// within one tick costs the cluster nothing.
///
/// What the cluster holds is never guessed: a change whose publish was not confirmed may or may
/// not have arrived, and a node whose lease ran out has been reaped by the survivors. In both
/// cases the channel is *synced* next: the whole member list of this node instance, which the
/// sequencer's script applies as "exactly these".
///
/// Leases: the node renews its lease in Redis every `heartbeatMicros`; survivors reap the
/// members of an instance whose lease has run out. The announcer says when a heartbeat and a
/// scan for expired peers are due, and which reaps to ask for (each expired instance's channels,
/// asked again no more often than once a `leaseMicros` while it stays expired).
///
/// - Important: not thread-safe; owned by the node's presence thread.
public struct PresenceAnnouncer {
    public struct Settings: Sendable {
        /// Changes are handed out at most once per tick.
        public var tickMicros: UInt64
        /// How long a lease lasts without renewal.
        public var leaseMicros: UInt64
        /// How often the lease is renewed and expired peers are looked for.
        public var heartbeatMicros: UInt64
        public init(tickMicros: UInt64 = 100_000, leaseMicros: UInt64 = 5_000_000, heartbeatMicros: UInt64 = 1_000_000) {
            (self.tickMicros, self.leaseMicros, self.heartbeatMicros) = (tickMicros, leaseMicros, heartbeatMicros)
        }
    }

    /// A change to publish; `token` names it in `confirmed(through:)`.
    public struct Outgoing: Equatable, Sendable {
        public var channel: String
        public var change: PresenceChange
        public var token: UInt64
    }

    public let settings: Settings
    /// This node instance (random per process start): the prefix of its client ids.
    public let instance: String
    private var members: [String: [String: [UInt8]]] = [:]
    private var announced: [String: [String: [UInt8]]] = [:]
    private var dirty: Set<String> = []
    private var needsSync: Set<String> = []
    private var inFlight: [(token: UInt64, channels: [String])] = []
    private var nextToken: UInt64 = 1
    private var nextTick: UInt64 = 0
    private var nextHeartbeat: UInt64 = 0
    /// Whether this instance holds a lease: changes wait until the first heartbeat was answered
    /// (the sequencer drops joins of an instance without a lease).
    public private(set) var leased = false
    private var reapAsked: [String: UInt64] = [:]

    public init(settings: Settings, instance: String) { (self.settings, self.instance) = (settings, instance) }

    /// This node's members of `channel` now.
    public func members(of channel: String) -> [String: [UInt8]] { members[channel] ?? [:] }
    public var memberCount: Int { members.values.reduce(0) { $0 + $1.count } }
    public var channels: [String] { members.keys.sorted() }

    // MARK: Members

    public mutating func joined(channel: String, client: String, member: [UInt8]) {
        members[channel, default: [:]][client] = member
        dirty.insert(channel)
    }

    public mutating func left(channel: String, client: String) {
        guard members[channel]?.removeValue(forKey: client) != nil else { return }
        if members[channel]?.isEmpty == true { members[channel] = nil }
        dirty.insert(channel)
    }

    // MARK: Time

    public enum Due: Equatable, Sendable {
        /// Renew the lease (and look for expired peers): answer with `heartbeat(lapsed:)`.
        case heartbeat
        /// Publish these changes, then `confirmed` or `unconfirmed`.
        case publish([Outgoing])
    }

    /// What is due at `nowMicros` (monotonic); call it at least once per tick.
    public mutating func due(nowMicros now: UInt64) -> [Due] {
        var out: [Due] = []
        if now >= nextHeartbeat {
            nextHeartbeat = now + settings.heartbeatMicros
            out.append(.heartbeat)
        }
        if leased, now >= nextTick, !(dirty.isEmpty && needsSync.isEmpty) {
            nextTick = now + settings.tickMicros
            let changes = takeChanges()
            if !changes.isEmpty { out.append(.publish(changes)) }
        }
        return out
    }

    /// The monotonic time of the next thing due (for the thread's wait).
    public var nextDueMicros: UInt64 {
        leased && !(dirty.isEmpty && needsSync.isEmpty) ? min(nextTick, nextHeartbeat) : nextHeartbeat
    }

    /// Redis renewed the lease; `lapsed`: it had run out (or never existed) before, so peers may
    /// have reaped this instance's members and every channel is synced.
    public mutating func heartbeat(lapsed: Bool) {
        if lapsed && leased { resyncAll() }
        leased = true
    }

    /// Redis could not be reached: the lease is not known to hold; changes wait.
    public mutating func heartbeatFailed() {
        if leased { resyncAll() }
        leased = false
    }

    private mutating func resyncAll() {
        needsSync.formUnion(members.keys)
        needsSync.formUnion(announced.keys)
    }

    // MARK: Publishing

    private mutating func takeChanges() -> [Outgoing] {
        var out: [Outgoing] = []
        var channels: [String] = []
        for channel in dirty.union(needsSync).sorted() {
            let now = members[channel] ?? [:]
            let before = announced[channel] ?? [:]
            var change: PresenceChange
            if needsSync.contains(channel) {
                change = PresenceChange(sync: true, joins: now.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
            } else {
                change = PresenceChange()
                for (client, member) in before.sorted(by: { $0.key < $1.key }) where now[client] != member {
                    change.leaves.append(client)
                }
                for (client, member) in now.sorted(by: { $0.key < $1.key }) where before[client] != member {
                    change.joins.append((client, member))
                }
            }
            announced[channel] = now.isEmpty ? nil : now
            if change.isEmpty { continue }
            out.append(Outgoing(channel: channel, change: change, token: nextToken))
            channels.append(channel)
        }
        dirty.removeAll()
        needsSync.removeAll()
        if !out.isEmpty {
            inFlight.append((nextToken, channels))
            nextToken += 1
        }
        return out
    }

    /// RabbitMQ confirmed the changes through `token`.
    public mutating func confirmed(through token: UInt64) {
        inFlight.removeAll { $0.token <= token }
    }

    /// The connection went before the confirms: those changes may or may not have arrived, so
    /// their channels are synced.
    public mutating func unconfirmed() {
        for (_, channels) in inFlight { needsSync.formUnion(channels) }
        inFlight.removeAll()
    }

    /// Stopping: a sync with no member for every channel this instance announced members on.
    public mutating func farewell() -> [Outgoing] {
        members.removeAll()
        needsSync.formUnion(announced.keys)
        return takeChanges()
    }

    // MARK: Reaping

    /// Expired peer instances (their lease ran out) and the channels each had members on: the
    /// reaps to ask for now. An instance stays expired until the sequencer has reaped all of its
    /// channels; it is asked again at most once per lease.
    public mutating func reaps(expired: [(instance: String, channels: [String])], nowMicros now: UInt64) -> [Outgoing] {
        var out: [Outgoing] = []
        let seen = Set(expired.map(\.instance))
        reapAsked = reapAsked.filter { seen.contains($0.key) }
        for (peer, channels) in expired.sorted(by: { $0.instance < $1.instance }) where peer != instance {
            if let asked = reapAsked[peer], now < asked + settings.leaseMicros { continue }
            reapAsked[peer] = now
            for channel in channels.sorted() {
                out.append(Outgoing(channel: channel, change: PresenceChange(reaps: [peer]), token: nextToken))
            }
        }
        if !out.isEmpty {
            inFlight.append((nextToken, []))
            nextToken += 1
        }
        return out
    }
}
