/// The WebSocket side of a node as one state machine: every connection's `ClientSession`, one
/// `ChannelRing` per subscribed channel, the subscribers of each channel, write coalescing, token
/// expiry and the keep-alive of empty channels.
///
/// Events come from the socket layer (opened, received, writable, closed), from the other
/// threads (live messages, history reads) and from the one timer; `handle` answers with the
/// actions to take. No socket, thread or clock is touched here: the caller passes the time in.
///
/// - Important: not thread-safe; owned by the WebSocket service thread.
public struct FanOut {
    public typealias ConnectionID = UInt64

    public struct Settings: Sendable {
        public var session: ClientSession.Policy
        /// Messages a client may fall behind before it must resume (4008); a channel's
        /// namespace may set its own (`backlog(of:)`).
        public var clientBacklog: Int
        /// A ring grows for a burst up to this; a repair never exceeds the history size.
        public var maxRingCapacity: Int
        /// A busy channel's subscribers are written at most once per this many µs.
        public var coalesceMicros: UInt64
        /// How often the meta hashes of subscribed empty channels are extended.
        public var keepAliveMicros: UInt64
        public var maxBatchFrames = 256
        public var maxBatchBytes = 64 * 1024
        /// Presence: the session policy's `presencePatterns` say which channels have members;
        /// a member's client id starts with this node instance, and it names this node.
        public var instance = "0"
        public var node = ""
        /// Report connections, subscriptions and disconnects as `.lifecycle` actions.
        public var lifecycle = false

        public init(session: ClientSession.Policy, clientBacklog: Int, maxRingCapacity: Int,
                    coalesceMicros: UInt64, keepAliveMicros: UInt64) {
            self.session = session
            self.clientBacklog = clientBacklog
            self.maxRingCapacity = maxRingCapacity
            self.coalesceMicros = coalesceMicros
            self.keepAliveMicros = keepAliveMicros
        }

        public func backlog(of channel: String) -> Int {
            let watched = PresenceStream.channel(of: channel) ?? channel
            return session.namespace(of: watched)?.clientBacklog ?? clientBacklog
        }
    }

    /// The clock, read by the caller once per event.
    public struct Now: Equatable, Sendable {
        public var monotonicMicros: UInt64
        public var wallMillis: UInt64
        public init(monotonicMicros: UInt64, wallMillis: UInt64) { (self.monotonicMicros, self.wallMillis) = (monotonicMicros, wallMillis) }
        var wallSeconds: UInt64 { wallMillis / 1000 }
        var monotonicMillis: Int64 { Int64(monotonicMicros / 1000) }
        /// The monotonic time at which the wall clock reaches `seconds`.
        func monotonicMicros(atWallSeconds seconds: UInt64) -> UInt64 {
            monotonicMicros + (seconds * 1000 > wallMillis ? (seconds * 1000 - wallMillis) * 1000 : 0)
        }
    }

    public var settings: Settings
    public internal(set) var sessions: [ConnectionID: ClientSession] = [:]
    var closing: Set<ConnectionID> = []
    /// Connections whose `connected` lifecycle input has been reported.
    private var announced: Set<ConnectionID> = []
    var rings: [String: ChannelRing] = [:]
    private var subscribers: [String: Set<ConnectionID>] = [:]
    private var pending: [UInt64: (connection: ConnectionID, channel: String)] = [:]
    private var nextRequest: UInt64 = 1
    private var expiries = ExpiryQueue()
    private var lastFlush: [String: UInt64] = [:]
    private var pendingFlush: Set<String> = []
    private var timerDue: UInt64?
    private var keepAliveDue: UInt64?
    /// The newest seq of each channel whose sequencing time was reported.
    private var reportedSeq: [String: UInt64] = [:]
    /// Subscription-token deadlines and connections by user (FanOut+Control).
    var control = ControlState()
    /// Connections that negotiated permessage-deflate: their writes carry the shared pieces.
    var compressing: Set<ConnectionID> = []

    public init(settings: Settings) { self.settings = settings }

    /// A new coalescing window (from `CoalesceWindow`): flushes already scheduled keep their
    /// time, the next ones follow the new window.
    public mutating func setCoalesce(micros: UInt64) { settings.coalesceMicros = micros }

    public func ring(_ channel: String) -> ChannelRing? { rings[channel] }
    public func subscribers(of channel: String) -> Set<ConnectionID> { subscribers[channel] ?? [] }
    /// Subscribers per channel (presence streams left out), for the cluster's channel list.
    public func subscriberCounts() -> [String: Int] {
        var counts: [String: Int] = [:]
        for (channel, ids) in subscribers where PresenceStream.channel(of: channel) == nil { counts[channel] = ids.count }
        return counts
    }

    public mutating func handle(_ event: Event, now: Now) -> [Action] {
        handle(CollectionOfOne(event), now: now)
    }

    /// Handles events that arrived together (one wake-up of the service thread) as one round:
    /// what they append to a ring counts as one burst, and each touched channel is flushed once,
    /// after all of them, as if they had been one event.
    public mutating func handle(_ events: some Sequence<Event>, now: Now) -> [Action] {
        var actions: [Action] = []
        var round = Round()
        for event in events { apply(event, now: now, round: &round, into: &actions) }
        finish(round, now: now, into: &actions)
        return actions
    }

    /// What one round appended: per channel, the burst size; the touched channels in order.
    private struct Round {
        var burst: [String: Int] = [:]
        var touched: [String] = []
        var touchedSet: Set<String> = []
    }

    private mutating func apply(_ event: Event, now: Now, round: inout Round, into actions: inout [Action]) {
        switch event {
        case let .opened(id, query, identity, compresses, refusal):
            sessions[id] = ClientSession(policy: settings.session)
            if compresses { compressing.insert(id) }
            if let refusal { return session(id, .refusedByConnectProxy(status: refusal), now: now, into: &actions) }
            session(id, .opened(query: query, identity: identity), now: now, into: &actions)
            indexUser(id)
            announce(id, into: &actions)
        case let .received(id, message, binary):
            guard sessions[id] != nil, !closing.contains(id) else { return }
            let userBefore = sessions[id]!.claims?.sub
            session(id, .received(message, binary: binary), now: now, into: &actions)
            indexUser(id)
            if settings.lifecycle, announced.contains(id), let session = sessions[id], session.claims?.sub != userBefore {
                actions.append(.lifecycle(.authenticated(client: clientID(id), user: session.claims?.sub)))
            }
        case let .writable(id):
            write(id, into: &actions)
        case let .closed(id, code):
            forget(id, code: code, into: &actions)
        case let .live(messages):
            append(messages, round: &round, into: &actions)
        case let .broken(channel):
            breakChannel(channel, reason: "live gap on channel \(channel)", into: &actions)
        case let .history(channel, requests, snapshot):
            for request in requests {
                guard let (id, _) = pending.removeValue(forKey: request), !closing.contains(id) else { continue }
                let client = clientID(id)
                guard sessions[id] != nil else { continue }
                // No plan: an answer to an older request, or a replay deferred to the client's
                // next resume (`Outbox.apply`); the queue goes out either way.
                if let plan = sessions[id]!.outbox.apply(channel: channel, request: request, snapshot: snapshot, client: client) {
                    actions.append(.tally(.replay(messages: plan.replay.count)))
                }
                actions.append(.writeSoon(id))
            }
        case .timer:
            timerFired(now: now, into: &actions)
        case let .control(command):
            serverCommand(command, now: now, into: &actions)
        case let .subscribeProxyAnswered(id, channel, allowed):
            guard sessions[id] != nil, !closing.contains(id) else { return }
            session(id, .subscribeProxyAnswered(channel: channel, allowed: allowed), now: now, into: &actions)
        case let .talkBack(id, answer):
            guard sessions[id] != nil, !closing.contains(id) else { return }
            session(id, .talkBackAnswered(answer), now: now, into: &actions)
        }
    }

    // MARK: Sessions

    mutating func session(_ id: ConnectionID, _ event: ClientSession.Event, now: Now, into actions: inout [Action]) {
        guard let result = sessions[id]?.handle(event, monotonicMillis: now.monotonicMillis, wallSeconds: now.wallSeconds) else { return }
        for action in result {
            switch action {
            case .sendSoon:
                actions.append(.requestWritable(id))
            case let .subscribe(channel, resume):
                let request = nextRequest
                nextRequest += 1
                sessions[id]!.outbox.subscribe(channel: channel, resume: resume, request: request)
                let joined = subscribers[channel, default: []].insert(id).inserted
                if joined, settings.lifecycle, PresenceStream.channel(of: channel) == nil {
                    announce(id, into: &actions)
                    actions.append(.lifecycle(.subscribed(client: clientID(id), channel: channel)))
                }
                if joined, hasMembers(channel) {
                    let claims = sessions[id]!.claims
                    let member = PresenceMember(client: clientID(id), user: claims?.sub, node: settings.node, info: claims?.info)
                    actions.append(.presence(.joined(channel: channel, client: member.client, member: member.json)))
                }
                if rings[channel] == nil { rings[channel] = ChannelRing(capacity: settings.backlog(of: channel)) }
                pending[request] = (id, channel)
                actions.append(.readHistory(channel: channel, request: request))
                if keepAliveDue == nil {
                    keepAliveDue = now.monotonicMicros + settings.keepAliveMicros
                    schedule(keepAliveDue!, into: &actions)
                }
            case let .unsubscribed(channel):
                let wasSubscribed = subscribers[channel]?.contains(id) ?? false
                leave(id, channel, into: &actions)
                if PresenceStream.channel(of: channel) == nil {
                    actions.append(.tally(.unsubscribed(count: 1)))
                    if wasSubscribed, announced.contains(id) { actions.append(.lifecycle(.unsubscribed(client: clientID(id), channel: channel))) }
                }
            case let .expires(at):
                expiries.track(id, expiresAt: at)
                schedule(now.monotonicMicros(atWallSeconds: at), into: &actions)
            case let .subscriptionExpires(channel, at):
                trackSubscription(id, channel, until: at, now: now, into: &actions)
            case let .askSubscribeProxy(channel, url):
                let claims = sessions[id]!.claims
                actions.append(.askSubscribeProxy(id, channel: channel, url: url, user: claims?.sub, client: clientID(id), info: claims?.info))
            case .expired:
                closeExpired(now: now, into: &actions)
            case let .close(code, reason, label):
                close(id, code: code, reason: reason, label: label, grace: 5, into: &actions)
            case let .tally(t):
                actions.append(.tally(t))
            case let .talkBack(request):
                actions.append(.talkBack(id, request.from(clientID(id))))
            }
        }
    }

    private mutating func forget(_ id: ConnectionID, code: UInt16, into actions: inout [Action]) {
        closing.remove(id)
        compressing.remove(id)
        expiries.forget(id)
        forgetSubscriptions(of: id)
        guard let session = sessions.removeValue(forKey: id) else { return }
        indexUser(id)
        let channels = Array(session.subscriptions)
        for channel in channels { leave(id, channel, into: &actions) }
        let counted = channels.count { PresenceStream.channel(of: $0) == nil }
        if counted > 0 { actions.append(.tally(.unsubscribed(count: counted))) }
        if announced.remove(id) != nil { actions.append(.lifecycle(.disconnected(client: clientID(id), code: code))) }
    }

    /// Reports an accepted connection once, before anything else about it (a connection closed
    /// while opening, such as one with a bad token, is never reported).
    private mutating func announce(_ id: ConnectionID, into actions: inout [Action]) {
        guard settings.lifecycle, sessions[id] != nil, !closing.contains(id), announced.insert(id).inserted else { return }
        actions.append(.lifecycle(.connected(client: clientID(id), user: sessions[id]!.claims?.sub)))
    }

    private mutating func leave(_ id: ConnectionID, _ channel: String, into actions: inout [Action]) {
        if subscribers[channel]?.remove(id) != nil, hasMembers(channel) {
            actions.append(.presence(.left(channel: channel, client: clientID(id))))
        }
        if subscribers[channel]?.isEmpty ?? true {
            subscribers[channel] = nil
            if rings.removeValue(forKey: channel) != nil { actions.append(.unwatch(channel: channel)) }
            lastFlush[channel] = nil
            reportedSeq[channel] = nil
        }
    }

    mutating func close(_ id: ConnectionID, code: UInt16, reason: String, label: String, grace: Int,
                                into actions: inout [Action]) {
        guard sessions[id] != nil, closing.insert(id).inserted else { return }
        actions.append(.close(id, code: code, reason: reason, label: label, graceSeconds: grace))
    }

    /// Connections whose token has expired are closed with 4002: they may reconnect with a fresh
    /// token and resume where they were.
    private mutating func closeExpired(now: Now, into actions: inout [Action]) {
        for id in expiries.expired(nowSeconds: now.wallSeconds) where sessions[id] != nil && !closing.contains(id) {
            actions.append(.tally(.tokenExpiredClose))
            close(id, code: 4002, reason: "token expired", label: "token_expired", grace: 5, into: &actions)
        }
        if let next = expiries.next { schedule(now.monotonicMicros(atWallSeconds: next), into: &actions) }
    }

    // MARK: Live messages and coalescing

    private mutating func append(_ messages: [SequencedMessage], round: inout Round, into actions: inout [Action]) {
        for m in messages {
            guard let ring = rings[m.channel] else { continue }
            // Everything appended in this round counts as one burst: room for it on top of the
            // backlog, so a client that was keeping up is not closed by a burst.
            let size = (round.burst[m.channel] ?? 0) + 1
            round.burst[m.channel] = size
            ring.reserve(min(settings.backlog(of: m.channel) + size, settings.maxRingCapacity))
            switch ring.append(seq: m.seq, epoch: m.epoch, frame: m.frame, piece: m.piece) {
            case .appended:
                if round.touchedSet.insert(m.channel).inserted { round.touched.append(m.channel) }
            case .stale:
                break
            case .restarted:
                breakChannel(m.channel, reason: "channel \(m.channel) restarted its sequence", into: &actions)
            }
        }
    }

    /// After a round: each channel that got messages reports its newest sequencing time and is
    /// flushed (at once, or at the end of its coalescing window).
    private mutating func finish(_ round: Round, now: Now, into actions: inout [Action]) {
        for channel in round.touched {
            if let ring = rings[channel], let last = ring.lastSeq, reportedSeq[channel] != last,
               case let .frame(f) = ring.lookup(last), let t = FrameFields.time(f) {
                reportedSeq[channel] = last
                actions.append(.sequencedAt(millis: t))
            }
            flushSoon(channel, now: now, into: &actions)
        }
    }

    /// Subscribers of a channel are asked to write at most once per `coalesceMicros`: a message
    /// on a quiet channel goes out at once; on a busy channel the messages that arrive within the
    /// interval share one write per client.
    private mutating func flushSoon(_ channel: String, now: Now, into actions: inout [Action]) {
        if let last = lastFlush[channel], now.monotonicMicros &- last < settings.coalesceMicros {
            pendingFlush.insert(channel)
            schedule(last + settings.coalesceMicros, into: &actions)
        } else {
            flush(channel, now: now, into: &actions)
        }
    }

    private mutating func flush(_ channel: String, now: Now, into actions: inout [Action]) {
        lastFlush[channel] = now.monotonicMicros
        guard let group = subscribers[channel], let ring = rings[channel] else { return }
        for id in group where !closing.contains(id) {
            // A client whose position left the ring, or whose epoch the ring no longer carries,
            // can never continue here: it resumes (4008), even if it has stopped reading.
            guard let mustResume = withSession(id, { $0.outbox.mustResume(channel: channel, ring: ring) }) else { continue }
            if mustResume {
                closeSlow(id, reason: "cannot continue on \(channel): more than \(settings.backlog(of: channel)) messages behind, or its epoch changed",
                          into: &actions)
            } else {
                actions.append(.writeSoon(id))
            }
        }
    }

    /// Every subscriber of `channel` must resume: its sequence cannot be continued here.
    private mutating func breakChannel(_ channel: String, reason: String, into actions: inout [Action]) {
        guard subscribers[channel] != nil else { return }
        rings[channel] = ChannelRing(capacity: settings.backlog(of: channel))
        for id in subscribers[channel] ?? [] { closeSlow(id, reason: reason, into: &actions) }
    }

    // MARK: The timer

    mutating func schedule(_ due: UInt64, into actions: inout [Action]) {
        if timerDue.map({ due < $0 }) ?? true {
            timerDue = due
            actions.append(.schedule(atMicros: due))
        }
    }

    private mutating func timerFired(now: Now, into actions: inout [Action]) {
        timerDue = nil
        let due = pendingFlush
        pendingFlush.removeAll(keepingCapacity: true)
        for channel in due { flush(channel, now: now, into: &actions) }
        if let keepAlive = keepAliveDue {
            if now.monotonicMicros >= keepAlive {
                let empty = subscribers.keys.filter { rings[$0]?.lastSeq == nil }
                if !empty.isEmpty { actions.append(.keepEmptyAlive(channels: empty.sorted())) }
                keepAliveDue = subscribers.isEmpty ? nil : now.monotonicMicros + settings.keepAliveMicros
            }
            if let next = keepAliveDue { schedule(next, into: &actions) }
        }
        if let next = expiries.next {
            if next <= now.wallSeconds { closeExpired(now: now, into: &actions) } else {
                schedule(now.monotonicMicros(atWallSeconds: next), into: &actions)
            }
        }
        endExpiredSubscriptions(now: now, into: &actions)
    }
}
