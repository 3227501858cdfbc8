/// A connection's publishes and calls (PROTOCOL.md, "Client publish" and "RPC"): who may send
/// what, the per-connection limits, and the requests handed to the node's talk-back worker.
extension ClientSession {
    /// The talk-back rules every session of a server follows.
    public struct TalkBackPolicy: Sendable {
        /// For channels whose namespace does not set `client-publish`.
        public var clientPublish: ClientPublishRule
        public var publishesPerSecond: Double
        /// Method patterns any connection may call; a token's `rpc` claim adds its own.
        public var rpcMethods: [String]
        public var rpcTimeoutMillis: UInt64
        public var rpcMaxInFlight: Int
        /// The largest `data` of a publish or call.
        public var maxDataBytes: Int

        public init(clientPublish: ClientPublishRule = .off, publishesPerSecond: Double = 10, rpcMethods: [String] = [],
                    rpcTimeoutMillis: UInt64 = 10_000, rpcMaxInFlight: Int = 32, maxDataBytes: Int = 65_536) {
            self.clientPublish = clientPublish
            self.publishesPerSecond = publishesPerSecond
            self.rpcMethods = rpcMethods
            self.rpcTimeoutMillis = rpcTimeoutMillis
            self.rpcMaxInFlight = rpcMaxInFlight
            self.maxDataBytes = maxDataBytes
        }
    }

    func publishRule(of channel: String) -> ClientPublishRule {
        policy.namespace(of: channel)?.clientPublish ?? policy.talkBack.clientPublish
    }

    mutating func clientPublish(_ op: ClientPublishOp, now: Int64, into actions: inout [Action]) {
        func refuse(_ code: ClientError.Code, _ message: String) {
            actions.append(.tally(.clientPublish(code.rawValue)))
            send(ClientError(code, message, op: "publish", channel: op.channel, id: op.id), into: &actions)
        }
        let rule = publishRule(of: op.channel)
        let allowed: Bool
        switch rule {
        case .off: allowed = false
        case .subscribers: allowed = outbox.subscriptions[op.channel] != nil
        case .token: allowed = claims.map { ChannelPattern.matches(any: $0.publish, op.channel) } ?? false
        case .backend: allowed = mayRead(op.channel)
        }
        guard allowed else {
            switch rule {
            case .off: return refuse(.forbidden, "clients may not publish to this channel (client-publish is false)")
            case .subscribers: return refuse(.forbidden, "only subscribers of this channel may publish to it: subscribe first")
            case .token: return refuse(.forbidden, "your token's publish claim does not name this channel")
            case .backend: return refuse(.forbidden, "you may not read this channel, so you may not publish to it")
            }
        }
        guard op.data.count <= policy.talkBack.maxDataBytes else {
            return refuse(.tooLarge, "data is \(op.data.count) bytes; at most \(policy.talkBack.maxDataBytes) (--max-message-bytes)")
        }
        guard publishes.allow(nowMillis: now) else {
            return refuse(.rateLimited, "more than \(Int(policy.talkBack.publishesPerSecond)) publishes a second on this connection: not published, send it again later")
        }
        let user = claims?.sub
        actions.append(.talkBack(.publish(ClientPublishRequest(
            id: op.id, channel: op.channel, data: op.data, messageID: TalkBack.messageID(user: user, id: op.id),
            backend: rule == .backend, sender: TalkBackSender(user: user, client: "")))))
    }

    mutating func clientRPC(_ op: ClientRPCOp, into actions: inout [Action]) {
        func refuse(_ code: RPCErrorCode, _ message: String) {
            actions.append(.tally(.rpc(code.rawValue)))
            outbox.enqueue(TalkBackAnswer.rpcError(id: op.id, code: code, message: message).frame)
            actions.append(.sendSoon)
        }
        guard ChannelPattern.matches(any: policy.talkBack.rpcMethods, op.method) || ChannelPattern.matches(any: claims?.rpc ?? [], op.method) else {
            return refuse(.forbidden, "method \(op.method) is not in --rpc-methods nor in your token's rpc claim")
        }
        guard op.data.count <= policy.talkBack.maxDataBytes else {
            return refuse(.tooLarge, "data is \(op.data.count) bytes; at most \(policy.talkBack.maxDataBytes) (--max-message-bytes)")
        }
        guard rpcInFlight < policy.talkBack.rpcMaxInFlight else {
            return refuse(.rateLimited, "\(policy.talkBack.rpcMaxInFlight) calls of this connection are waiting for an answer (--rpc-max-in-flight)")
        }
        rpcInFlight += 1
        let timeout = min(op.timeoutMillis ?? policy.talkBack.rpcTimeoutMillis, policy.talkBack.rpcTimeoutMillis)
        actions.append(.talkBack(.rpc(ClientRPCRequest(id: op.id, method: op.method, data: op.data, timeoutMillis: timeout,
                                                        claims: TalkBack.claimsJSON(claims), sender: TalkBackSender(user: claims?.sub, client: "")))))
    }

    /// The worker's answer goes out; an answered call no longer counts as in flight.
    mutating func talkBackAnswered(_ answer: TalkBackAnswer, into actions: inout [Action]) {
        if answer.isRPC { rpcInFlight = max(0, rpcInFlight - 1) }
        outbox.enqueue(answer.frame)
        actions.append(.sendSoon)
    }
}
