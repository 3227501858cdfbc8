import Testing
@testable import HeraldCore

/// Client publish and RPC decided by the session alone: the rules, the limits, the requests
/// handed to the worker and the frames that answer.
@Suite struct TalkBackTests {
    static func session(rule: ClientPublishRule = .subscribers, namespaces: [ChannelNamespace] = [], rate: Double = 2,
                        methods: [String] = ["cart.*"], inFlight: Int = 2, maxData: Int = 100) -> ClientSession {
        var p = policy(opsPerSecond: 1_000, burst: 1_000, anonymous: ["*"])
        p.namespaces = namespaces
        p.talkBack = .init(clientPublish: rule, publishesPerSecond: rate, rpcMethods: methods, rpcTimeoutMillis: 5_000,
                           rpcMaxInFlight: inFlight, maxDataBytes: maxData)
        return ClientSession(policy: p)
    }

    static func publishes(_ actions: [ClientSession.Action]) -> [ClientPublishRequest] {
        actions.compactMap { if case let .talkBack(.publish(p)) = $0 { p } else { nil } }
    }

    static func calls(_ actions: [ClientSession.Action]) -> [ClientRPCRequest] {
        actions.compactMap { if case let .talkBack(.rpc(r)) = $0 { r } else { nil } }
    }

    static func publish(_ channel: String, _ id: String, data: String = "1") -> ClientSession.Event {
        op(#"{"op":"publish","channel":"\#(channel)","data":\#(data),"id":"\#(id)"}"#)
    }

    @Test func subscribersMayPublishOnlyToWhatTheyAreSubscribedTo() {
        var s = Self.session()
        #expect(Self.publishes(s.handle(Self.publish("room", "m1"), monotonicMillis: 0, wallSeconds: 0)).isEmpty)
        #expect(drain(&s) == [#"{"type":"error","code":"forbidden","message":"only subscribers of this channel may publish to it: subscribe first","op":"publish","channel":"room","id":"m1"}"#])
        s.outbox.subscribe(channel: "room", resume: nil, request: 1)
        let sent = Self.publishes(s.handle(Self.publish("room", "m2", data: #"{ "a" : [1, 2] }"#), monotonicMillis: 0, wallSeconds: 0))
        #expect(sent == [ClientPublishRequest(id: "m2", channel: "room", data: Array(#"{"a":[1,2]}"#.utf8), messageID: "client::m2",
                                              backend: false, sender: TalkBackSender(user: nil, client: ""))])
    }

    @Test func eachRuleOfTheChannelsNamespaceDecides() {
        var token = NamespaceTests.namespace("tok", ["tok:*"]) { $0.clientPublish = .token }
        token.anonymous = true
        let backend = NamespaceTests.namespace("in", ["in:*"]) { $0.clientPublish = .backend }
        let off = NamespaceTests.namespace("off", ["off:*"]) { $0.clientPublish = .off }
        var s = Self.session(rule: .subscribers, namespaces: [token, backend, off])
        var claims = TokenClaims(sub: "ann", exp: 2_000, channels: ["*"])
        claims.publish = ["tok:a*"]
        _ = s.handle(.opened(query: [("token", signer.sign(claims))]), monotonicMillis: 0, wallSeconds: 1_000)
        _ = drain(&s)
        #expect(Self.publishes(s.handle(Self.publish("tok:ab", "1"), monotonicMillis: 0, wallSeconds: 1_000)).map(\.messageID) == ["client:ann:1"])
        #expect(Self.publishes(s.handle(Self.publish("tok:b", "2"), monotonicMillis: 0, wallSeconds: 1_000)).isEmpty)
        #expect(Self.publishes(s.handle(Self.publish("in:x", "3"), monotonicMillis: 0, wallSeconds: 1_000)).map(\.backend) == [true])
        #expect(Self.publishes(s.handle(Self.publish("off:x", "4"), monotonicMillis: 0, wallSeconds: 1_000)).isEmpty)
        let errors = drain(&s)
        #expect(errors.count == 2)
        #expect(errors[0].contains(#""code":"forbidden","message":"your token's publish claim does not name this channel""#))
        #expect(errors[1].contains(#"client-publish is false"#))
    }

    @Test func oversizeDataAndAFloodAreRefusedEachWithItsIdAndItsCode() {
        var s = Self.session(rule: .backend, rate: 2)
        #expect(Self.publishes(s.handle(Self.publish("a", "big", data: "\"\(String(repeating: "x", count: 120))\""), monotonicMillis: 0, wallSeconds: 0)).isEmpty)
        #expect(drain(&s).first?.contains(#""code":"too_large""#) == true)
        // A burst of twice the rate, then one a half second.
        let sent = (0..<6).flatMap { Self.publishes(s.handle(Self.publish("a", "f\($0)"), monotonicMillis: 0, wallSeconds: 0)) }
        #expect(sent.map(\.id) == ["f0", "f1", "f2", "f3"])
        #expect(drain(&s).map { $0.contains(#""code":"rate_limited""#) } == [true, true])
        #expect(Self.publishes(s.handle(Self.publish("a", "g"), monotonicMillis: 500, wallSeconds: 0)).map(\.id) == ["g"])
    }

    @Test func callsNeedAnAllowedMethodAndAreBoundedInFlight() {
        var s = Self.session(methods: ["cart.*"], inFlight: 2)
        let rpc = { (id: String, method: String, extra: String) in op(#"{"op":"rpc","id":"\#(id)","method":"\#(method)","data":{"n":1}\#(extra)}"#) }
        let first = Self.calls(s.handle(rpc("r1", "cart.add", ""), monotonicMillis: 0, wallSeconds: 0))
        #expect(first.map(\.timeoutMillis) == [5_000] && first.map(\.claims) == [Array("{}".utf8)] && first.map(\.data) == [Array(#"{"n":1}"#.utf8)])
        #expect(Self.calls(s.handle(rpc("r2", "cart.add", #","timeout":60000"#), monotonicMillis: 0, wallSeconds: 0)).map(\.timeoutMillis) == [5_000])
        #expect(Self.calls(s.handle(rpc("r3", "cart.add", ""), monotonicMillis: 0, wallSeconds: 0)).isEmpty)
        #expect(Self.calls(s.handle(rpc("r4", "admin.x", ""), monotonicMillis: 0, wallSeconds: 0)).isEmpty)
        #expect(drain(&s) == [
            #"{"type":"rpc_error","id":"r3","code":"rate_limited","message":"2 calls of this connection are waiting for an answer (--rpc-max-in-flight)"}"#,
            #"{"type":"rpc_error","id":"r4","code":"forbidden","message":"method admin.x is not in --rpc-methods nor in your token's rpc claim"}"#,
        ])
        // An answer frees a place; a publish's answer does not.
        _ = s.handle(.talkBackAnswered(.published(id: "p", channel: "c", messageID: "client::p")), monotonicMillis: 0, wallSeconds: 0)
        #expect(Self.calls(s.handle(rpc("r5", "cart.add", ""), monotonicMillis: 0, wallSeconds: 0)).isEmpty)
        _ = s.handle(.talkBackAnswered(.rpcResult(id: "r1", data: Array("[1]".utf8))), monotonicMillis: 0, wallSeconds: 0)
        #expect(Self.calls(s.handle(rpc("r6", "cart.add", #","timeout":250"#), monotonicMillis: 0, wallSeconds: 0)).map(\.timeoutMillis) == [250])
        #expect(drain(&s) == [#"{"type":"published","id":"p","channel":"c","message_id":"client::p"}"#,
                              #"{"type":"rpc_error","id":"r5","code":"rate_limited","message":"2 calls of this connection are waiting for an answer (--rpc-max-in-flight)"}"#,
                              #"{"type":"rpc_result","id":"r1","data":[1]}"#])
    }

    @Test func malformedOpsAreBadRequestsNamingTheIdWhenThereIsOne() {
        let cases: [(String, ClientError)] = [
            (#"{"op":"rpc","method":"a"}"#, ClientError(.badRequest, "\"id\" must be a non-empty string of at most 128 bytes", op: "rpc")),
            (#"{"op":"rpc","id":"r","method":""}"#, ClientError(.badRequest, "\"method\" must be 1 to 255 bytes", op: "rpc", id: "r")),
            (#"{"op":"rpc","id":"r","method":"a b"}"#, ClientError(.badRequest, "\"method\" may hold only letters, digits and . _ - :", op: "rpc", id: "r")),
            (#"{"op":"rpc","id":"r","method":"a","timeout":-1}"#, ClientError(.badRequest, "\"timeout\" must be a positive number of milliseconds", op: "rpc", id: "r")),
            (#"{"op":"publish","channel":"c","data":1}"#, ClientError(.badRequest, "\"id\" must be a non-empty string of at most 128 bytes", op: "publish", channel: "c")),
            (#"{"op":"publish","channel":"c","id":"m"}"#, ClientError(.badRequest, "\"data\" is missing", op: "publish", channel: "c", id: "m")),
            (#"{"op":"publish","channel":"","data":1,"id":"m"}"#, ClientError(.badChannel, "channel name must be 1 to 255 bytes", op: "publish", channel: "", id: "m")),
        ]
        for (text, expected) in cases {
            guard case let .failure(error) = ClientOpParser.parse(Array(text.utf8)) else {
                Issue.record("parsed: \(text)")
                continue
            }
            #expect(error.code == expected.code && error.op == expected.op && error.id == expected.id && error.channel == expected.channel, "\(text)")
            if expected.code == .badRequest { #expect(error.message == expected.message, "\(text)") }
        }
    }

    @Test func tokensCarryPublishAndRPCPatternsAndWorkersSeeThemInTheClaimsHeader() throws {
        var claims = TokenClaims(sub: "u", exp: 2_000, channels: ["a"], info: Array(#"{"n":1}"#.utf8))
        claims.publish = ["chat:*"]
        claims.rpc = ["cart.add"]
        let verified = try signer.verify(signer.sign(claims), nowSeconds: 1_000).get()
        #expect(verified.publish == ["chat:*"] && verified.rpc == ["cart.add"])
        #expect(String(decoding: TalkBack.claimsJSON(verified), as: UTF8.self)
                == #"{"sub":"u","exp":2000,"channels":["a"],"publish":["chat:*"],"rpc":["cart.add"],"info":{"n":1}}"#)
        #expect(TalkBack.methodPatternProblem("cart.*") == nil && TalkBack.methodPatternProblem("c*rt") != nil)
    }

    @Test func deadlinesSetInAnyOrderExpireEarliestFirstAndRemovedOnesNever() {
        var heap = DeadlineHeap<String>()
        for (key, at) in [("c", 30), ("a", 10), ("d", 40), ("b", 20), ("e", 5)] { heap.set(key, deadline: UInt64(at)) }
        heap.remove("b")
        #expect(heap.expire(now: 4).isEmpty)
        #expect(heap.expire(now: 30) == ["e", "a", "c"])
        heap.set("d", deadline: 50)   // moved later: its old entry is skipped
        #expect(heap.expire(now: 45).isEmpty && heap.count == 1)
        #expect(heap.expire(now: 50) == ["d"] && heap.count == 0)
    }
}

