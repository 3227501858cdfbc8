/// What one WebSocket connection may do, decided without I/O: its token, its subscribe rights,
/// its limits and its rate. The connection's `Outbox` (what it still has to receive) lives here
/// too; `FanOut` owns the rings and routes history reads.
///
/// `handle` returns what the caller must do; it never writes, closes or reads anything itself.
///
/// - Important: not thread-safe; owned by the WebSocket service thread, through `FanOut`.
public struct ClientSession {
    /// The rules every session of a server follows.
    public struct Policy: Sendable {
        public var maxSubscriptions: Int
        public var opsPerSecond: Double
        public var opsBurst: Double
        public var anonymousPatterns: [String]
        /// nil: tokens are not enabled (no token keys).
        public var verifier: TokenVerifier?
        public var maxControlBytes: Int
        /// Channels with presence (`--presence-channels`).
        public var presencePatterns: [String]
        /// Per-pattern overrides of anonymous read and presence (`ChannelNamespace`).
        public var namespaces: [ChannelNamespace]
        /// Client publish and RPC.
        public var talkBack = TalkBackPolicy()

        public init(maxSubscriptions: Int, opsPerSecond: Double, opsBurst: Double, anonymousPatterns: [String],
                    verifier: TokenVerifier?, maxControlBytes: Int = 4 << 20, presencePatterns: [String] = [],
                    namespaces: [ChannelNamespace] = [], talkBack: TalkBackPolicy = TalkBackPolicy()) {
            self.talkBack = talkBack
            self.presencePatterns = presencePatterns
            self.namespaces = namespaces
            self.maxSubscriptions = maxSubscriptions
            self.opsPerSecond = opsPerSecond
            self.opsBurst = opsBurst
            self.anonymousPatterns = anonymousPatterns
            self.verifier = verifier
            self.maxControlBytes = maxControlBytes
        }

        func namespace(of channel: String) -> ChannelNamespace? {
            namespaces.isEmpty ? nil : ChannelNamespace.of(channel, in: namespaces)
        }

        /// Readable without a token: its namespace says so, else the anonymous patterns.
        public func isAnonymous(_ channel: String) -> Bool {
            namespace(of: channel)?.anonymous ?? ChannelPattern.matches(any: anonymousPatterns, channel)
        }

        /// Subscribers of `channel` are members of its presence.
        public func hasPresence(_ channel: String) -> Bool {
            if namespaces.isEmpty && presencePatterns.isEmpty { return false }
            return namespace(of: channel)?.presence ?? ChannelPattern.matches(any: presencePatterns, channel)
        }
    }

    public enum Event {
        /// The upgrade completed; the URL's query pairs, and who the connect proxy said it is.
        case opened(query: [(String, String)], identity: TokenClaims? = nil)
        /// The upgrade completed although the connect proxy refused it (`--connect-proxy-refusal
        /// close`) with this HTTP status: the connection is closed with 4001 or 4003.
        case refusedByConnectProxy(status: Int)
        /// A complete client message.
        case received([UInt8], binary: Bool)
        /// The server API subscribes the connection (`POST /api/subscribe`): as if it had asked,
        /// and readable whatever its token says.
        case serverSubscribe(channel: String)
        /// The server API ends a subscription (`POST /api/unsubscribe`): `unsubscribed` with
        /// `"reason": "server"`.
        case serverUnsubscribe(channel: String)
        /// The subscription token of `channel` has expired (the server's timer).
        case subscriptionExpired(channel: String)
        /// The namespace's subscribe proxy answered: allowed, refused, or nil (it could not be asked).
        case subscribeProxyAnswered(channel: String, allowed: Bool?)
        /// The talk-back worker answered a publish or a call.
        case talkBackAnswered(TalkBackAnswer)
    }

    public enum Action: Equatable {
        /// Control frames were queued: the connection should be written soon.
        case sendSoon
        /// Start (or replace) the subscription: read the channel's history.
        case subscribe(channel: String, resume: ResumePosition?)
        /// The subscription ended (the `unsubscribed` frame is already queued).
        case unsubscribed(channel: String)
        /// The token is valid until `exp` (wall-clock seconds): close with 4002 then.
        case expires(at: UInt64)
        /// The subscription token of `channel` is valid until `at`: send `.subscriptionExpired` then.
        case subscriptionExpires(channel: String, at: UInt64)
        /// Ask the channel namespace's subscribe proxy; answer with `.subscribeProxyAnswered`.
        case askSubscribeProxy(channel: String, url: String)
        /// The token has already expired: close with 4002 now.
        case expired
        /// Close the connection (4001 for a refused token, 4004 for a key not known yet).
        case close(code: UInt16, reason: String, label: String)
        case tally(Tally)
        /// Hand a publish or call to the node's talk-back worker (the sender's client id is the
        /// caller's to fill in); its answer comes back as `.talkBackAnswered`.
        case talkBack(TalkBackRequest)
    }

    public let policy: Policy
    public var outbox: Outbox
    /// What the connection's token allows (nil: anonymous).
    public private(set) var claims: TokenClaims?
    private var ops: RateLimiter
    /// Client publishes (`--client-publish-rate`), and calls waiting for an answer.
    var publishes: RateLimiter
    var rpcInFlight = 0
    /// Channels the server API subscribed this connection to: readable without the token.
    private var granted: Set<String> = []
    /// Channels readable through a subscription token, until when (wall-clock seconds, leeway included).
    private var tokenGranted: [String: UInt64] = [:]
    /// Channels the subscribe proxy allowed, and the subscribes waiting for its answer.
    private var proxyAllowed: Set<String> = []
    private var proxyPending: [String: (resume: ResumePosition?, presence: Bool, presenceResume: ResumePosition?)] = [:]
    private var lastRateLimitNotice: Int64 = Int64.min / 2

    public init(policy: Policy) {
        self.policy = policy
        outbox = Outbox(maxControlBytes: policy.maxControlBytes)
        ops = RateLimiter(perSecond: policy.opsPerSecond, burst: policy.opsBurst)
        publishes = RateLimiter(perSecond: policy.talkBack.publishesPerSecond, burst: max(1, 2 * policy.talkBack.publishesPerSecond))
    }

    public var subscriptions: Dictionary<String, Outbox.SubscriptionState>.Keys { outbox.subscriptions.keys }

    /// - Parameter now: monotonic milliseconds (rate limiting) and wall-clock seconds (tokens).
    public mutating func handle(_ event: Event, monotonicMillis now: Int64, wallSeconds: UInt64) -> [Action] {
        var actions: [Action] = []
        switch event {
        case let .opened(query, identity):
            if let identity { adopt(identity, into: &actions) }
            let request = ConnectRequest.parse(pairs: query)
            if let token = request.token, !authenticate(token, wallSeconds: wallSeconds, into: &actions) { return actions }
            for error in request.errors { send(error, into: &actions) }
            for (channel, resume) in request.subscriptions {
                guard subscribe(channel, resume: resume, wallSeconds: wallSeconds, into: &actions), request.presence else { continue }
                subscribePresence(channel, resume: nil, into: &actions)
            }
        case let .refusedByConnectProxy(status):
            actions.append(.close(code: ConnectIdentity.closeCode(refusal: status), reason: ConnectIdentity.refusalReason, label: "connect_proxy"))
        case let .serverSubscribe(channel):
            granted.insert(channel)
            if outbox.subscriptions[channel] == nil { subscribe(channel, resume: nil, wallSeconds: wallSeconds, into: &actions) }
        case let .serverUnsubscribe(channel):
            granted.remove(channel)
            if outbox.subscriptions[channel] != nil { unsubscribe(channel, reason: "server", into: &actions) }
        case let .subscribeProxyAnswered(channel, allowed):
            guard let asked = proxyPending.removeValue(forKey: channel) else { break }
            switch allowed {
            case true?:
                proxyAllowed.insert(channel)
                guard subscribe(channel, resume: asked.resume, wallSeconds: wallSeconds, into: &actions), asked.presence else { break }
                subscribePresence(channel, resume: asked.presenceResume, into: &actions)
            case false?:
                actions.append(.tally(.forbidden))
                send(ClientError(.forbidden, "the application refused this subscription (subscribe proxy)", op: "subscribe", channel: channel), into: &actions)
            case nil:
                send(ClientError(.subscribeProxyUnavailable, "the subscribe proxy could not be asked; retry", op: "subscribe", channel: channel), into: &actions)
            }
        case let .talkBackAnswered(answer):
            talkBackAnswered(answer, into: &actions)
        case let .subscriptionExpired(channel):
            guard let until = tokenGranted[channel], until <= wallSeconds else { break }
            tokenGranted[channel] = nil
            if outbox.subscriptions[channel] != nil { unsubscribe(channel, reason: "token_expired", into: &actions) }
        case let .received(message, binary):
            guard ops.allow(nowMillis: now) else {
                // Dropped; told at most once a second so a flood does not become a flood of errors.
                actions.append(.tally(.rateLimited))
                if now - lastRateLimitNotice >= 1000 {
                    lastRateLimitNotice = now
                    send(ClientError(.rateLimited, "more than \(Int(policy.opsPerSecond)) frames a second: frames dropped"), into: &actions)
                }
                return actions
            }
            if binary {
                send(ClientError(.badRequest, "client frames must be text (JSON)"), into: &actions)
                return actions
            }
            switch ClientOpParser.parse(message) {
            case let .success(.auth(token)):
                _ = authenticate(token, wallSeconds: wallSeconds, into: &actions)
            case let .success(.subscribe(channel, resume)):
                subscribe(channel, resume: resume, wallSeconds: wallSeconds, into: &actions)
            case let .success(.subscribeWithToken(request)):
                guard admit(request.channel, token: request.token, op: "subscribe", wallSeconds: wallSeconds, into: &actions),
                      subscribe(request.channel, resume: request.resume, wallSeconds: wallSeconds, into: &actions),
                      request.presence else { break }
                subscribePresence(request.channel, resume: request.presenceResume, into: &actions)
            case let .success(.refresh(channel, token)):
                guard outbox.subscriptions[channel] != nil else {
                    send(ClientError(.badRequest, "not subscribed to this channel", op: "refresh", channel: channel), into: &actions)
                    break
                }
                if admit(channel, token: token, op: "refresh", wallSeconds: wallSeconds, into: &actions) {
                    outbox.enqueue(ServerFrame.refreshed(channel: channel, exp: tokenGranted[channel]! - leeway))
                    actions.append(.sendSoon)
                }
            case let .success(.subscribeWithPresence(channel, resume, presenceResume)):
                guard subscribe(channel, resume: resume, wallSeconds: wallSeconds, into: &actions) else {
                    if proxyPending[channel] != nil { proxyPending[channel] = (resume, true, presenceResume) }
                    break
                }
                subscribePresence(channel, resume: presenceResume, into: &actions)
            case let .success(.presence(channel)):
                let stream = PresenceStream.name(of: channel)
                if outbox.subscriptions[stream] != nil {
                    actions.append(.subscribe(channel: stream, resume: nil))
                } else {
                    send(ClientError(.presenceUnavailable, "subscribe to this channel with \"presence\": true first", op: "presence", channel: channel),
                         into: &actions)
                }
            case let .success(.unsubscribe(channel)):
                unsubscribe(channel, into: &actions)
            case let .success(.publish(op)):
                clientPublish(op, now: now, into: &actions)
            case let .success(.rpc(op)):
                clientRPC(op, into: &actions)
            case let .failure(error):
                send(error, into: &actions)
            }
        }
        return actions
    }

    private var leeway: UInt64 { policy.verifier?.rules.leewaySeconds ?? 0 }

    /// Whether this connection may read `channel`: its token's channels, or the anonymous ones.
    public func mayRead(_ channel: String) -> Bool {
        if let watched = PresenceStream.channel(of: channel) { return mayRead(watched) }
        if let claims, claims.allows(channel) { return true }
        if granted.contains(channel) || tokenGranted[channel] != nil || proxyAllowed.contains(channel) { return true }
        if let sub = claims?.sub, policy.namespace(of: channel)?.isUserChannel(channel, of: sub) == true { return true }
        return policy.isAnonymous(channel)
    }

    // MARK: Rules

    /// Checks a token; a bad one closes the connection with 4001 and returns false. A token
    /// presented again replaces the old one, and subscriptions it does not cover end here, each
    /// with a `forbidden` error and an `unsubscribed` frame.
    private mutating func authenticate(_ token: String, wallSeconds: UInt64, into actions: inout [Action]) -> Bool {
        let result = policy.verifier.map { $0.verify(token, nowSeconds: wallSeconds) }
            ?? .failure(TokenError(.disabled, "tokens are not enabled on this server (no token keys)"))
        switch result {
        case let .success(new):
            let renewal = claims != nil
            claims = new
            outbox.enqueue(ServerFrame.authenticated(sub: new.sub, exp: new.exp))
            actions.append(.sendSoon)
            if renewal {
                for channel in outbox.subscriptions.keys.sorted() where !mayRead(channel) && PresenceStream.channel(of: channel) == nil {
                    actions.append(.tally(.forbidden))
                    send(ClientError(.forbidden, "your new token does not cover this channel: unsubscribed", op: "auth", channel: channel),
                         into: &actions)
                    unsubscribe(channel, into: &actions)
                }
            }
            // The clock skew allowed at verification holds while connected too: a token accepted
            // within the leeway is not closed at once.
            actions.append(.expires(at: new.exp + leeway))
            return true
        case let .failure(error):
            actions.append(.tally(.authFailure(error.reason)))
            // A kid no key has yet may be a key the IdP just rotated in: its set is being fetched
            // again, so the client is told to retry (4004) rather than to give up (4001).
            let code: UInt16 = error.retryable ? 4004 : 4001
            actions.append(.close(code: code, reason: String("invalid token: \(error)".prefix(120)), label: error.reason.rawValue))
            return false
        }
    }

    /// The connect proxy's answer: the connection is its user, as if it had presented a token.
    private mutating func adopt(_ identity: TokenClaims, into actions: inout [Action]) {
        claims = identity
        outbox.enqueue(ServerFrame.authenticated(sub: identity.sub, exp: identity.exp))
        actions.append(.sendSoon)
        if identity.exp != ConnectIdentity.noExpiry { actions.append(.expires(at: identity.exp)) }
    }

    /// Checks a subscription token for `channel`; when good, the channel is readable until it
    /// expires (the caller subscribes). A bad one is an error frame; the connection stays.
    private mutating func admit(_ channel: String, token: String, op: String, wallSeconds: UInt64, into actions: inout [Action]) -> Bool {
        let result = policy.verifier.map { $0.verifySubscription(token, channel: channel, sub: claims?.sub ?? "", nowSeconds: wallSeconds) }
            ?? .failure(TokenError(.disabled, "tokens are not enabled on this server (no token keys)"))
        switch result {
        case let .success(subscription):
            let until = subscription.exp + leeway
            tokenGranted[channel] = until
            actions.append(.subscriptionExpires(channel: channel, at: until))
            return true
        case let .failure(error):
            actions.append(.tally(.subscriptionTokenRefused))
            send(ClientError(.badSubscriptionToken, "subscription token refused (\(error.reason.rawValue)): \(error.description)", op: op, channel: channel),
                 into: &actions)
            return false
        }
    }

    /// True when the subscription goes ahead.
    @discardableResult
    private mutating func subscribe(_ channel: String, resume: ResumePosition?, wallSeconds: UInt64, into actions: inout [Action]) -> Bool {
        if let claims, claims.exp + leeway <= wallSeconds {
            // Expired since it was accepted: closed with 4002 at once.
            actions.append(.expired)
            return false
        }
        let isNew = outbox.subscriptions[channel] == nil
        // Presence streams ride along with their channel and do not count.
        if isNew, outbox.subscriptions.keys.count(where: { PresenceStream.channel(of: $0) == nil }) >= policy.maxSubscriptions {
            actions.append(.tally(.subscriptionLimit))
            send(ClientError(.tooManySubscriptions, "at most \(policy.maxSubscriptions) subscriptions per connection",
                                    op: "subscribe", channel: channel), into: &actions)
            return false
        }
        if let url = policy.namespace(of: channel)?.subscribeProxyURL, !proxyAllowed.contains(channel), !granted.contains(channel),
           tokenGranted[channel] == nil {
            // The application decides; the subscribe goes on when it answers.
            if proxyPending[channel] == nil { actions.append(.askSubscribeProxy(channel: channel, url: url)) }
            proxyPending[channel] = (resume, false, nil)
            return false
        }
        if policy.namespace(of: channel)?.subscribeToken == .required, tokenGranted[channel] == nil, !granted.contains(channel) {
            send(ClientError(.subscriptionTokenRequired, "this channel needs a subscription token: subscribe with \"token\"",
                             op: "subscribe", channel: channel), into: &actions)
            return false
        }
        guard mayRead(channel) else {
            actions.append(.tally(.forbidden))
            send(ClientError(.forbidden, claims == nil
                                    ? "this channel needs a token (connect with ?token= or send {\"op\":\"auth\"})"
                                    : "your token does not cover this channel", op: "subscribe", channel: channel),
                        into: &actions)
            return false
        }
        if isNew { actions.append(.tally(.subscribed)) }
        actions.append(.subscribe(channel: channel, resume: resume))
        return true
    }

    /// The member list of a channel just subscribed, or `presence_unavailable` without presence.
    private mutating func subscribePresence(_ channel: String, resume: ResumePosition?, into actions: inout [Action]) {
        if policy.hasPresence(channel) {
            actions.append(.subscribe(channel: PresenceStream.name(of: channel), resume: resume))
        } else {
            send(ClientError(.presenceUnavailable, "this channel has no presence (--presence-channels)", op: "subscribe", channel: channel),
                 into: &actions)
        }
    }

    /// Ends a subscription (if there is one) and answers `unsubscribed`; its presence stream, if
    /// it had one, ends with it.
    private mutating func unsubscribe(_ channel: String, reason: String? = nil, into actions: inout [Action]) {
        tokenGranted[channel] = nil
        proxyAllowed.remove(channel)
        proxyPending[channel] = nil
        if outbox.unsubscribe(channel: channel) {
            actions.append(.unsubscribed(channel: channel))
        }
        let stream = PresenceStream.name(of: channel)
        if outbox.unsubscribe(channel: stream) {
            actions.append(.unsubscribed(channel: stream))
        }
        outbox.enqueue(ServerFrame.unsubscribed(channel: channel, reason: reason))
        actions.append(.sendSoon)
    }

    mutating func send(_ error: ClientError, into actions: inout [Action]) {
        actions.append(.tally(.clientError))
        outbox.enqueue(error.frame)
        actions.append(.sendSoon)
    }
}

/// Counters the state machines ask the server to bump (the server maps them to `/metrics`).
public enum Tally: Equatable, Sendable {
    case authFailure(TokenError.Reason)
    case forbidden
    case rateLimited
    case subscriptionLimit
    case clientError
    /// A subscription was added (the gauge goes up; `unsubscribedCount` brings it down).
    case subscribed
    case unsubscribed(count: Int)
    case replay(messages: Int)
    case slowConsumerClose
    case tokenExpiredClose
    /// A connection closed by the server API (`disconnect`).
    case serverDisconnect
    /// A subscription token was refused (`bad_subscription_token`).
    case subscriptionTokenRefused
    /// A client publish refused by the session, by error code (`forbidden`, `too_large`, `rate_limited`).
    case clientPublish(String)
    /// A call refused by the session, by `rpc_error` code.
    case rpc(String)
}
