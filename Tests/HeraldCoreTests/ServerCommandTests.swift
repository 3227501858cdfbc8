import HeraldCrypto
import Testing
@testable import HeraldCore

/// The server API's commands: parsed strictly, and applied by `ClientSession` and `FanOut`.
@Suite struct ServerCommandTests {
    func parse(_ name: String, _ body: String, now: UInt64 = 1_000) -> Result<ServerCommand, ServerCommand.Problem> {
        ServerCommand.parse(name: name, body: Array(body.utf8), nowSeconds: now, revokeSeconds: 600)
    }

    @Test func commandsParseAndBadOnesSayWhy() throws {
        #expect(try parse("disconnect", #"{"user":"ann"}"#).get()
                == .disconnect(.user("ann"), reconnect: false, reason: "disconnected by the server", revokeBefore: nil, revokeUntil: nil))
        #expect(try parse("disconnect", #"{"user":"ann","revoke":true,"reconnect":true}"#).get()
                == .disconnect(.user("ann"), reconnect: true, reason: "disconnected by the server", revokeBefore: 1_000, revokeUntil: 1_600))
        #expect(try parse("disconnect", #"{"user":"ann","revoke":true,"revoke_before":900,"revoke_until":5000}"#).get()
                == .disconnect(.user("ann"), reconnect: false, reason: "disconnected by the server", revokeBefore: 900, revokeUntil: 5_000))
        #expect(try parse("subscribe", #"{"client":"c1","channel":"a:1"}"#).get() == .subscribe(.client("c1"), channel: "a:1"))
        #expect(try parse("broadcast", #"{"channels":["a","b","a"],"data":{"x": 1},"id":"i"}"#).get()
                == .broadcast(channels: ["a", "b"], data: Array(#"{"x":1}"#.utf8), id: "i"))
        func code(_ r: Result<ServerCommand, ServerCommand.Problem>) -> String? { if case let .failure(p) = r { p.code } else { nil } }
        #expect(code(parse("explode", "{}")) == "unknown_command")
        #expect(code(parse("disconnect", "[1]")) == "bad_json")
        #expect(code(parse("disconnect", #"{"user":"a","client":"b"}"#)) == "bad_request")
        #expect(code(parse("disconnect", #"{"user":""}"#)) == "bad_request")
        #expect(code(parse("disconnect", #"{"client":"c","revoke":true}"#)) == "bad_request")
        #expect(code(parse("disconnect", #"{"user":"a","revoke":"yes"}"#)) == "bad_request")
        #expect(code(parse("disconnect", #"{"user":"a","revoke":true,"revoke_until":999}"#)) == "bad_request")
        #expect(code(parse("unsubscribe", #"{"user":"a","channel":"bad name"}"#)) == "bad_channel")
        #expect(code(parse("broadcast", #"{"channels":["a"]}"#)) == "bad_request")
        #expect(code(parse("broadcast", #"{"channels":["a"],"data":1,"id":""}"#)) == "bad_request")
    }

    func fanOut() -> FanOut {
        FanOut(settings: FanOut.Settings(session: policy(anonymous: []), clientBacklog: 100, maxRingCapacity: 100,
                                         coalesceMicros: 0, keepAliveMicros: 1_000_000))
    }

    let now = FanOut.Now(monotonicMicros: 1_000_000, wallMillis: 1_000_000)

    @Test func disconnectClosesTheUsersConnectionsOnly() {
        var f = fanOut()
        for (id, sub) in [(1, "ann"), (2, "bob"), (3, "ann")] {
            let token = signer.sign(TokenClaims(sub: sub, exp: 2_000, channels: ["a"]))
            _ = f.handle(.opened(UInt64(id), query: [("token", token)]), now: now)
        }
        let actions = f.handle(.control(.disconnect(.user("ann"), reconnect: false, reason: "bye", revokeBefore: nil, revokeUntil: nil)), now: now)
        #expect(actions.filter { if case .close = $0 { true } else { false } } == [
            .close(1, code: 4003, reason: "bye", label: "server_disconnect", graceSeconds: 5),
            .close(3, code: 4003, reason: "bye", label: "server_disconnect", graceSeconds: 5)])
        let again = f.handle(.control(.disconnect(.user("bob"), reconnect: true, reason: "later", revokeBefore: nil, revokeUntil: nil)), now: now)
        #expect(again.contains(.close(2, code: 4005, reason: "later", label: "server_disconnect", graceSeconds: 5)))
    }

    @Test func targetsFollowTheConnectionsCurrentTokenAndClientIDs() {
        var f = fanOut()
        f.settings.instance = "i1"
        _ = f.handle(.opened(1, query: [("token", signer.sign(TokenClaims(sub: "ann", exp: 2_000, channels: ["a"])))]), now: now)
        _ = f.handle(.opened(2, query: []), now: now)
        // Connection 1 presents bob's token: it is bob's now, not ann's.
        _ = f.handle(.received(1, Array(#"{"op":"auth","token":"\#(signer.sign(TokenClaims(sub: "bob", exp: 2_000, channels: ["a"])))"}"#.utf8),
                               binary: false), now: now)
        #expect(f.connections(of: .user("ann")).isEmpty && f.connections(of: .user("bob")) == [1])
        #expect(f.connections(of: .client("i1.2")) == [2])
        #expect(f.connections(of: .client("i2.2")).isEmpty && f.connections(of: .client("i1.9")).isEmpty && f.connections(of: .client("junk")).isEmpty)
        _ = f.handle(.closed(1), now: now)
        #expect(f.connections(of: .user("bob")).isEmpty && f.control.users.isEmpty)
    }

    @Test func aServerSubscriptionIsReadableUntilTheServerEndsIt() {
        var f = fanOut()
        let token = signer.sign(TokenClaims(sub: "ann", exp: 2_000, channels: ["a"]))
        _ = f.handle(.opened(1, query: [("token", token)]), now: now)
        #expect(!f.sessions[1]!.mayRead("vip"))
        let actions = f.handle(.control(.subscribe(.user("ann"), channel: "vip")), now: now)
        #expect(actions.contains { if case .readHistory(channel: "vip", _) = $0 { true } else { false } })
        #expect(f.subscribers(of: "vip") == [1] && f.sessions[1]!.mayRead("vip"))
        // A renewed token that does not name it keeps it: the server granted it.
        _ = f.handle(.received(1, Array(#"{"op":"auth","token":"\#(signer.sign(TokenClaims(sub: "ann", exp: 3_000, channels: ["a"])))"}"#.utf8), binary: false), now: now)
        #expect(f.subscribers(of: "vip") == [1])
        let ended = f.handle(.control(.unsubscribe(.user("ann"), channel: "vip")), now: now)
        #expect(ended.contains(.unwatch(channel: "vip")))
        #expect(f.subscribers(of: "vip").isEmpty && !f.sessions[1]!.mayRead("vip"))
        guard case let .frames(frames, _, _) = f.writeNext(1) else { Issue.record("nothing to write"); return }
        #expect(frames.map { String(decoding: $0, as: UTF8.self) }.last == #"{"type":"unsubscribed","channel":"vip","reason":"server"}"#)
        // Another user's command does not touch ann.
        #expect(f.handle(.control(.subscribe(.user("bob"), channel: "vip")), now: now).isEmpty)
    }
}

/// Subscription tokens and user channels, through the state machines.
@Suite struct SubscriptionTokenTests {
    let now = FanOut.Now(monotonicMicros: 1_000_000, wallMillis: 1_000_000)  // wall: 1000 s

    func fanOut() -> FanOut {
        var p = policy(anonymous: [])
        var priv = ChannelNamespace(name: "private", patterns: ["private:*"])
        priv.subscribeToken = .required
        var notify = ChannelNamespace(name: "notify", patterns: ["notify:*"])
        notify.userChannel = "notify:{sub}"
        p.namespaces = [priv, notify]
        return FanOut(settings: FanOut.Settings(session: p, clientBacklog: 100, maxRingCapacity: 100, coalesceMicros: 0, keepAliveMicros: 1_000_000))
    }

    func frames(_ f: inout FanOut, _ id: UInt64) -> [String] {
        guard case let .frames(frames, _, _) = f.writeNext(id) else { return [] }
        return frames.map { String(decoding: $0, as: UTF8.self) }
    }

    func send(_ f: inout FanOut, _ id: UInt64, _ json: String, at: FanOut.Now? = nil) -> [FanOut.Action] {
        f.handle(.received(id, Array(json.utf8), binary: false), now: at ?? now)
    }

    func subscriptionToken(sub: String, channel: String, exp: UInt64) -> String {
        var claims = TokenClaims(sub: sub, exp: exp, channels: [])
        claims.channel = channel
        return JWS.compact(claims, algorithm: .hs256) { LibCrypto.hmacSHA256(Array(secret.utf8), $0) }
    }

    @Test func aRequiredTokenIsCheckedAndItsExpiryEndsOnlyTheSubscription() {
        var f = fanOut()
        _ = f.handle(.opened(1, query: [("token", signer.sign(TokenClaims(sub: "ann", exp: 5_000, channels: ["*"])))]), now: now)
        _ = frames(&f, 1)
        // The connection token covers everything, but this namespace wants a subscription token.
        _ = send(&f, 1, #"{"op":"subscribe","channel":"private:1"}"#)
        #expect(frames(&f, 1).last?.contains(#""code":"subscription_token_required""#) == true)
        _ = send(&f, 1, #"{"op":"subscribe","channel":"private:1","token":"\#(subscriptionToken(sub: "bob", channel: "private:1", exp: 1_100))"}"#)
        #expect(frames(&f, 1).last?.contains(#""code":"bad_subscription_token""#) == true)
        _ = send(&f, 1, #"{"op":"subscribe","channel":"private:1","token":"\#(subscriptionToken(sub: "ann", channel: "private:2", exp: 1_100))"}"#)
        #expect(frames(&f, 1).last?.contains("does not name this channel") == true)
        _ = send(&f, 1, #"{"op":"subscribe","channel":"private:1","token":"\#(subscriptionToken(sub: "ann", channel: "private:*", exp: 1_100))"}"#)
        #expect(f.subscribers(of: "private:1") == [1])
        // A refresh before expiry moves it on; the old deadline no longer ends it.
        _ = send(&f, 1, #"{"op":"refresh","channel":"private:1","token":"\#(subscriptionToken(sub: "ann", channel: "private:1", exp: 1_200))"}"#)
        #expect(frames(&f, 1).contains(#"{"type":"refreshed","channel":"private:1","exp":1200}"#))
        _ = f.handle(.timer, now: FanOut.Now(monotonicMicros: 101_000_000, wallMillis: 1_100_000))
        #expect(f.subscribers(of: "private:1") == [1])
        _ = f.handle(.timer, now: FanOut.Now(monotonicMicros: 201_000_000, wallMillis: 1_200_000))
        #expect(f.subscribers(of: "private:1").isEmpty)
        #expect(frames(&f, 1).contains(#"{"type":"unsubscribed","channel":"private:1","reason":"token_expired"}"#))
        #expect(f.sessions[1] != nil)  // the connection stays
    }

    @Test func aUserChannelIsReadableByItsUserAlone() {
        var f = fanOut()
        _ = f.handle(.opened(1, query: [("token", signer.sign(TokenClaims(sub: "ann", exp: 5_000, channels: [])))]), now: now)
        _ = f.handle(.opened(2, query: [("token", signer.sign(TokenClaims(sub: "bob", exp: 5_000, channels: [])))]), now: now)
        _ = f.handle(.opened(3, query: []), now: now)
        #expect(f.sessions[1]!.mayRead("notify:ann") && !f.sessions[1]!.mayRead("notify:bob"))
        #expect(!f.sessions[2]!.mayRead("notify:ann") && f.sessions[2]!.mayRead("notify:bob"))
        #expect(!f.sessions[3]!.mayRead("notify:") && !f.sessions[1]!.mayRead("notify:annx"))
    }
}
