import HeraldRuntime
import HeraldLoadClients
#if canImport(Glibc)
import Glibc
#endif

/// Microseconds since the Unix epoch (publisher and clients share the machine's clock).
func wallMicros() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1_000
}

/// How clients find their stream in what they receive.
public enum ServerKind: Sendable {
    /// Herald: `subscribed` then `message` frames, numbered by `seq`; resume with since/epoch.
    case herald
    /// Any WebSocket server that sends the published body as the message (Nchan): numbered by
    /// the body's `n`, no resume.
    case peer
}

/// The numbers the control thread asks for once a second.
public struct FleetSnapshot: Sendable {
    public var open = 0
    public var subscribed = 0
    public var connectFailures = 0
    public var closes = 0
    public var deliveries: UInt64 = 0
    /// Bytes the clients read from their WebSocket connections, and how many compress.
    public var receivedBytes: UInt64 = 0
    public var compressedConnections = 0
    public var window = Histogram()   // latency since the previous snapshot
    public var connectTimes = Histogram()
    public var firstMessageTimes = Histogram()
}

/// What the clients' member lists took (with `presence`): frames of type presence, join and
/// leave per client, and when each list first held every client of the run.
public struct PresenceTally: Sendable {
    public var frames = 0
    public var maxFramesPerClient = 0
    public var complete = 0
    /// µs from the first connect to the moment the last list became complete (nil: not all did).
    public var allCompleteMicros: UInt64?
    public var clients = 0
    public var meanFramesPerClient: Double { clients > 0 ? Double(frames) / Double(clients) : 0 }
}

/// The final tally of every client against what was published.
public struct FleetTally: Sendable {
    public var lost: UInt64 = 0
    public var duplicated: UInt64 = 0
    public var outOfOrder: UInt64 = 0
    public var clientsWithLoss = 0
    public var recovered = 0 // clients whose resume answer said recovered (storm)
    public var resumed = 0
}

/// Every client connection of a run, on one lws client thread.
///
/// - Important: all state below is touched only on the pool's service thread; other threads
///   talk to it through `commands`.
public final class Fleet: WebSocketClientHandler, @unchecked Sendable {
    public enum Command: Sendable {
        case connect(Range<Int>)
        case dropAll
        case resumeAll
        case snapshot(Mailbox<FleetSnapshot>)
        case tally(expected: [UInt64], Mailbox<FleetTally>)
        case caughtUp(expected: [UInt64], Mailbox<Int>)
        case presence(Mailbox<PresenceTally>)
        /// Whether live messages count toward latency (not history replayed to joining clients).
        case measureLatency(Bool)
    }

    struct Client {
        var channel: Int
        var target: Int
        var tracker = SequenceTracker()
        var epoch: String?
        var connectStarted: UInt64 = 0
        var subscribed = false
        var firstMessage = false
        var resumes = 0
        var recovered = false
        var dropping = false
        var presenceFrames = 0
        var members = 0
        var completeAt: UInt64?
    }

    public let commands = Mailbox<Command>()
    let kind: ServerKind
    let urls: [(String) -> String]   // channel name → full ws:// URL, one per target server
    let channels: [String]
    let liveSince: UInt64           // µs: messages sent before this are history, not latency
    private var clients: [Client]
    private var pool: ClientPool!
    private var snapshot = FleetSnapshot()
    private var measuring = true
    var publishStartedMicros: UInt64 = 0
    private var firstConnectAt: UInt64?

    public init(kind: ServerKind, urls: [(String) -> String], channels: [String], clientCount: Int,
                engine: ClientEngine = .epoll, readRoundMicros: UInt32 = 500, offerDeflate: Bool = false) {
        self.kind = kind
        self.urls = urls
        self.channels = channels
        self.liveSince = wallMicros()
        clients = (0..<clientCount).map { Client(channel: $0 % channels.count, target: $0 % urls.count) }
        switch engine {
        case .epoll: pool = EpollClientPool(maxConnections: clientCount + 16, roundMicros: readRoundMicros, offerDeflate: offerDeflate, handler: self)
        case .lws: pool = WebSocketClientPool(maxConnections: clientCount + 16, handler: self)
        }
    }

    public func start() throws(ClientError) { try pool.start() }
    public func run() { pool.run() }
    public func stop() { pool.requestStop() }

    public func post(_ command: Command) {
        commands.post(command)
        pool.wakeUp()
    }

    // MARK: Service thread

    public func clientPoolWokenUp() {
        for command in commands.drain() {
            switch command {
            case let .connect(range):
                for id in range where id < clients.count { open(id, resume: false) }
            case .dropAll:
                for id in clients.indices {
                    clients[id].dropping = true
                    pool.drop(id)
                }
            case let .measureLatency(on):
                measuring = on
            case .resumeAll:
                for id in clients.indices { open(id, resume: true) }
            case let .snapshot(reply):
                snapshot.open = pool.openCount
                snapshot.receivedBytes = pool.receivedBytes
                snapshot.compressedConnections = pool.compressedConnections
                snapshot.subscribed = clients.reduce(0) { $0 + ($1.subscribed ? 1 : 0) }
                reply.post(snapshot)
                snapshot.window = Histogram()
            case let .tally(expected, reply):
                reply.post(tally(expected: expected))
            case let .caughtUp(expected, reply):
                var done = 0
                for c in clients where c.tracker.contiguous >= expected[c.channel] { done += 1 }
                reply.post(done)
            case let .presence(reply):
                var t = PresenceTally()
                t.clients = clients.count
                var last: UInt64 = 0
                for c in clients {
                    t.frames += c.presenceFrames
                    t.maxFramesPerClient = max(t.maxFramesPerClient, c.presenceFrames)
                    if let at = c.completeAt { t.complete += 1; last = max(last, at) }
                }
                if t.complete == clients.count, let first = firstConnectAt { t.allCompleteMicros = last > first ? last - first : 0 }
                reply.post(t)
            }
        }
    }

    private func open(_ id: Int, resume: Bool) {
        var query = ""
        if resume, kind == .herald, let epoch = clients[id].epoch {
            query = "&since=\(clients[id].tracker.contiguous)&epoch=\(epoch)"
            clients[id].resumes += 1
        }
        clients[id].subscribed = false
        clients[id].connectStarted = wallMicros()
        if firstConnectAt == nil { firstConnectAt = clients[id].connectStarted }
        let url = urls[clients[id].target](channels[clients[id].channel]) + query
        guard let target = WebSocketClientPool.Target(url: url) else {
            snapshot.connectFailures += 1
            return
        }
        pool.connect(id, to: target)
    }

    public func clientOpened(_ id: Int) {
        if kind == .peer { markSubscribed(id) }
    }

    private func markSubscribed(_ id: Int) {
        guard !clients[id].subscribed else { return }
        clients[id].subscribed = true
        snapshot.connectTimes.record(wallMicros() - clients[id].connectStarted)
    }

    public func clientReceived(_ id: Int, message: [UInt8]) {
        let now = wallMicros()
        Payload.forEachLine(message) { line in received(id, line: line, of: message, now: now) }
    }

    private func received(_ id: Int, line: Range<Int>, of message: [UInt8], now: UInt64) {
        let field: (value: UInt64, end: Int)?
        switch kind {
        case .herald:
            if Payload.hasPrefix(Payload.typeSubscribed, message, line) {
                clients[id].epoch = Payload.string(after: Payload.epochKey, in: message, range: line)
                if clients[id].resumes > 0 {
                    clients[id].recovered = Payload.find(Array(#""recovered":true"#.utf8), in: message, range: line) != nil
                }
                markSubscribed(id)
                return
            }
            guard Payload.hasPrefix(Payload.typeMessage, message, line) else { return presence(id, line: line, of: message, now: now) }
            field = Payload.numberAndEnd(after: Payload.seqKey, in: message, range: line)
        case .peer:
            field = Payload.numberAndEnd(after: Payload.numberKey, in: message, range: line)
        }
        guard let (n, end) = field else { return }
        if clients[id].tracker.observe(n) { snapshot.deliveries += 1 }
        guard measuring else { return }
        // Herald's envelope has "seq" before "data"; the body has "t" before "n".
        let rest = kind == .herald ? end..<line.upperBound : line
        if let sent = Payload.number(after: Payload.sentKey, in: message, range: rest), sent >= liveSince {
            snapshot.window.record(now > sent ? now - sent : 0)
            if !clients[id].firstMessage, publishStartedMicros > 0 {
                clients[id].firstMessage = true
                snapshot.firstMessageTimes.record(now > publishStartedMicros ? now - publishStartedMicros : 0)
            }
        }
    }

    /// Keeps the client's member count from its presence, join and leave frames (a channel's
    /// members, once per client: every client of a run is in the same room per channel).
    private func presence(_ id: Int, line: Range<Int>, of message: [UInt8], now: UInt64) {
        let members = Payload.count(Payload.memberStart, in: message, range: line)
        if Payload.hasPrefix(Payload.typePresence, message, line) {
            // Without "members" (a recovered resume) the list is unchanged.
            if Payload.find(Array(#""members":"#.utf8), in: message, range: line) != nil { clients[id].members = members }
        } else if Payload.hasPrefix(Payload.typeJoin, message, line) {
            clients[id].members += members
        } else if Payload.hasPrefix(Payload.typeLeave, message, line) {
            clients[id].members -= members
        } else {
            return
        }
        clients[id].presenceFrames += 1
        let room = (clients.count + channels.count - 1 - clients[id].channel) / channels.count
        if clients[id].completeAt == nil, clients[id].members >= room { clients[id].completeAt = now }
    }

    public func clientClosed(_ id: Int, code: UInt16?, error: String?) {
        if error != nil {
            snapshot.connectFailures += 1
        } else if !clients[id].dropping {
            snapshot.closes += 1
        }
        clients[id].dropping = false
        clients[id].subscribed = false
    }

    private func tally(expected: [UInt64]) -> FleetTally {
        var t = FleetTally()
        for c in clients {
            let want = expected[c.channel]
            let missing = want == 0 ? 0 : c.tracker.missing(in: 1...want)
            t.lost += missing
            if missing > 0 { t.clientsWithLoss += 1 }
            t.duplicated += c.tracker.duplicated
            t.outOfOrder += c.tracker.outOfOrder
            if c.resumes > 0 { t.resumed += 1 }
            if c.recovered { t.recovered += 1 }
        }
        return t
    }
}
