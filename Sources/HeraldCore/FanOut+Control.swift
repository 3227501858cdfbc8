/// The server API's commands and subscription-token deadlines, for `FanOut`.
extension FanOut {
    /// The connections a server command names: a user's (the token's `sub`) or one client id.
    func connections(of target: ServerCommand.Target) -> [ConnectionID] {
        let open = sessions.keys.filter { !closing.contains($0) }
        switch target {
        case let .user(user): return open.filter { sessions[$0]!.claims?.sub == user }.sorted()
        case let .client(client): return open.filter { clientID($0) == client }
        }
    }

    mutating func serverCommand(_ command: ServerCommand, now: Now, into actions: inout [Action]) {
        switch command {
        case let .disconnect(target, reconnect, reason, _, _):
            for id in connections(of: target) {
                actions.append(.tally(.serverDisconnect))
                close(id, code: reconnect ? ServerCommand.closeReconnect : ServerCommand.closeNoReconnect, reason: reason,
                      label: "server_disconnect", grace: 5, into: &actions)
            }
        case let .subscribe(target, channel):
            for id in connections(of: target) { session(id, .serverSubscribe(channel: channel), now: now, into: &actions) }
        case let .unsubscribe(target, channel):
            for id in connections(of: target) { session(id, .serverUnsubscribe(channel: channel), now: now, into: &actions) }
        case .broadcast:
            break
        }
    }


    /// A subscriber too far behind must resume (4008).
    mutating func closeSlow(_ id: ConnectionID, reason: String, into actions: inout [Action]) {
        guard sessions[id] != nil, !closing.contains(id) else { return }
        actions.append(.tally(.slowConsumerClose))
        close(id, code: 4008, reason: reason, label: "resume", grace: 10, into: &actions)
    }

    /// The subscription token of `channel` on `id` is good until `until` (wall seconds).
    mutating func trackSubscription(_ id: ConnectionID, _ channel: String, until: UInt64, now: Now, into actions: inout [Action]) {
        let key = subscriptionKeyOf[id]?[channel] ?? {
            let k = nextSubscriptionKey
            nextSubscriptionKey += 1
            subscriptionKeys[k] = (id, channel)
            subscriptionKeyOf[id, default: [:]][channel] = k
            return k
        }()
        subscriptionDeadlines.track(key, expiresAt: until)
        schedule(now.monotonicMicros(atWallSeconds: until), into: &actions)
    }

    mutating func forgetSubscriptions(of id: ConnectionID) {
        guard let keys = subscriptionKeyOf.removeValue(forKey: id) else { return }
        for key in keys.values {
            subscriptionDeadlines.forget(key)
            subscriptionKeys[key] = nil
        }
    }

    /// Subscriptions whose token ran out end (`unsubscribed`, reason `token_expired`); the
    /// connection stays.
    mutating func endExpiredSubscriptions(now: Now, into actions: inout [Action]) {
        for key in subscriptionDeadlines.expired(nowSeconds: now.wallSeconds) {
            guard let (id, channel) = subscriptionKeys.removeValue(forKey: key) else { continue }
            subscriptionKeyOf[id]?[channel] = nil
            session(id, .subscriptionExpired(channel: channel), now: now, into: &actions)
        }
        if let next = subscriptionDeadlines.next { schedule(now.monotonicMicros(atWallSeconds: next), into: &actions) }
    }
}
