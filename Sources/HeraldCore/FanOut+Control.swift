/// The server API's commands and subscription-token deadlines, for `FanOut`.
extension FanOut {
    struct ControlState {
        /// Subscription-token deadlines: a key per (connection, channel).
        var deadlines = ExpiryQueue()
        var keys: [UInt64: (connection: ConnectionID, channel: String)] = [:]
        var keyOf: [ConnectionID: [String: UInt64]] = [:]
        var nextKey: UInt64 = 1
        /// Connections by user (the token's `sub`).
        var users: [String: Set<ConnectionID>] = [:]
        var userOf: [ConnectionID: String] = [:]
    }

    /// The connections a server command names: a user's (the token's `sub`) or one client id.
    func connections(of target: ServerCommand.Target) -> [ConnectionID] {
        switch target {
        case let .user(user):
            return (control.users[user] ?? []).filter { sessions[$0] != nil && !closing.contains($0) }.sorted()
        case let .client(client):
            guard let id = PresenceMember.connection(of: client, instance: settings.instance), sessions[id] != nil, !closing.contains(id) else { return [] }
            return [id]
        }
    }

    /// Keeps `users` in step with the connection's token (call after anything that may change it).
    mutating func indexUser(_ id: ConnectionID) {
        let current = sessions[id]?.claims?.sub
        let before = control.userOf[id]
        guard current != before else { return }
        if let before {
            control.users[before]?.remove(id)
            if control.users[before]?.isEmpty == true { control.users[before] = nil }
        }
        control.userOf[id] = current
        if let current { control.users[current, default: []].insert(id) }
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
        let key = control.keyOf[id]?[channel] ?? {
            let k = control.nextKey
            control.nextKey += 1
            control.keys[k] = (id, channel)
            control.keyOf[id, default: [:]][channel] = k
            return k
        }()
        control.deadlines.track(key, expiresAt: until)
        schedule(now.monotonicMicros(atWallSeconds: until), into: &actions)
    }

    mutating func forgetSubscriptions(of id: ConnectionID) {
        guard let keys = control.keyOf.removeValue(forKey: id) else { return }
        for key in keys.values {
            control.deadlines.forget(key)
            control.keys[key] = nil
        }
    }

    /// Subscriptions whose token ran out end (`unsubscribed`, reason `token_expired`); the
    /// connection stays.
    mutating func endExpiredSubscriptions(now: Now, into actions: inout [Action]) {
        for key in control.deadlines.expired(nowSeconds: now.wallSeconds) {
            guard let (id, channel) = control.keys.removeValue(forKey: key) else { continue }
            control.keyOf[id]?[channel] = nil
            session(id, .subscriptionExpired(channel: channel), now: now, into: &actions)
        }
        if let next = control.deadlines.next { schedule(now.monotonicMicros(atWallSeconds: next), into: &actions) }
    }
}
