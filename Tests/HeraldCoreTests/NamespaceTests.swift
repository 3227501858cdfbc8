import Testing
@testable import HeraldCore

/// Namespaces: the most specific pattern wins, and each rule follows it.
@Suite struct NamespaceTests {
    static func namespace(_ name: String, _ patterns: [String], _ set: (inout ChannelNamespace) -> Void = { _ in }) -> ChannelNamespace {
        var n = ChannelNamespace(name: name, patterns: patterns)
        set(&n)
        return n
    }

    static let all = [
        namespace("default", ["*"]) { $0.historySize = 20 },
        namespace("chat", ["chat:*"]) { $0.historySize = 50; $0.anonymous = true; $0.presence = true },
        namespace("vip", ["chat:vip:*"]) { $0.historySize = 500; $0.anonymous = false },
        namespace("lobby", ["chat:lobby"]) { $0.historySize = 7 },
        namespace("prices", ["prices:*"]) { $0.historySize = 5; $0.historyTTLSeconds = 60; $0.anonymous = false
            $0.clientBacklog = 3; $0.publishKeys = ["feed"] },
        namespace("internal", ["internal:*"]) { $0.httpPublish = false },
    ]

    var config: HeraldConfig {
        var c = HeraldConfig()
        c.tokenSecret = secret
        c.apiKeys = ["ops"]
        c.anonymousChannels = ["public:*"]
        c.namespaces = Self.all
        return c
    }

    @Test func theMostSpecificPatternWins() {
        let of = { (channel: String) in ChannelNamespace.of(channel, in: Self.all)?.name }
        #expect(of("chat:room1") == "chat")
        #expect(of("chat:vip:1") == "vip")            // a longer prefix beats chat:*
        #expect(of("chat:lobby") == "lobby")          // an exact name beats every prefix
        #expect(of("chat:lobby2") == "chat")
        #expect(of("news") == "default")              // "*" catches the rest
        #expect(ChannelNamespace.of("news", in: Array(Self.all.dropFirst())) == nil)
        // The order of the list does not matter.
        #expect(ChannelNamespace.of("chat:vip:1", in: Self.all.reversed())?.name == "vip")
    }

    @Test func eachSettingFollowsTheChannelsNamespaceAndTheRestTheServer() {
        let c = config
        #expect(c.historySize(of: "chat:a") == 50 && c.historySize(of: "prices:eur") == 5 && c.historySize(of: "news") == 20)
        #expect(c.historyTTLSeconds(of: "prices:eur") == 60 && c.historyTTLSeconds(of: "chat:a") == c.historyTTLSeconds)
        #expect(c.clientBacklog(of: "prices:eur") == 3 && c.clientBacklog(of: "chat:a") == c.clientBacklog)
        #expect(c.isAnonymous("chat:a") && !c.isAnonymous("chat:vip:1") && !c.isAnonymous("prices:eur"))
        // "public:x" is in the "*" namespace, which leaves anonymous unset: --anonymous-channels decides.
        #expect(c.isAnonymous("public:x") && !c.isAnonymous("news"))
        #expect(c.hasPresence("chat:a") && !c.hasPresence("news"))
        #expect(c.largestHistorySize == 500 && c.largestClientBacklog == 1_000 && c.anyPresence)
        let policy = ClientSession.Policy(maxSubscriptions: 5, opsPerSecond: 5, opsBurst: 5, anonymousPatterns: c.anonymousPatterns,
                                          verifier: nil, namespaces: c.namespaces)
        #expect(policy.isAnonymous("chat:a") && !policy.isAnonymous("prices:eur") && policy.hasPresence("chat:b"))
    }

    @Test func withoutNamespacesTheServerSettingsHold() {
        var c = HeraldConfig()
        c.anonymousChannels = ["public:*"]
        c.presencePatterns = ["room:*"]
        #expect(c.historySize(of: "x") == 100 && c.isAnonymous("public:a") && !c.isAnonymous("x") && c.hasPresence("room:1"))
        #expect(!c.hasPresence("x") && c.anyPresence)
    }

    @Test func httpPublishFollowsTheNamespace() {
        let c = config
        let publish = { (channel: String, key: String?) in
            HTTPAccess.publish(.init(apiKey: key, authorization: nil), channel: channel, config: c)
        }
        #expect(publish("chat:a", "ops") == .allowed)
        guard case .refused(401, "unauthorized", _) = publish("chat:a", "feed") else { Issue.record("a namespace key is not global"); return }
        #expect(publish("prices:eur", "feed") == .allowed)
        guard case .refused(403, "forbidden", let m) = publish("prices:eur", "ops"), m.contains("prices") else {
            Issue.record("an API key outside the namespace's keys"); return
        }
        guard case .refused(401, "unauthorized", _) = publish("prices:eur", nil) else { Issue.record("no key"); return }
        guard case .refused(401, "unauthorized", _) = publish("prices:eur", "nope") else { Issue.record("wrong key"); return }
        guard case .refused(403, "publish_not_allowed", _) = publish("internal:x", "ops") else { Issue.record("off"); return }
    }

    @Test func historyReadsFollowTheNamespace() {
        let c = config
        let read = { (channel: String) in
            HTTPAccess.history(.init(apiKey: nil, authorization: nil), channel: channel, config: c, verifier: signer, nowSeconds: 1_000)
        }
        #expect(read("chat:a") == .allowed)
        guard case .refused(401, _, _) = read("prices:eur") else { Issue.record("prices needs a token"); return }
        guard case .refused(401, _, _) = read("chat:vip:1") else { Issue.record("vip needs a token"); return }
        // A namespace's publish key publishes and never reads, whichever header carries it.
        for credentials in [HTTPAccess.Credentials(apiKey: "feed", authorization: nil), .init(apiKey: nil, authorization: "Bearer feed")] {
            guard case .refused(403, "forbidden", _) = HTTPAccess.history(credentials, channel: "prices:eur", config: c,
                                                                           verifier: signer, nowSeconds: 1_000) else {
                Issue.record("a publish key read history"); return
            }
        }
        #expect(HTTPAccess.publish(.init(apiKey: "feed", authorization: nil), channel: "prices:eur", config: c) == .allowed)
        #expect(HTTPAccess.history(.init(apiKey: "ops", authorization: nil), channel: "prices:eur", config: c,
                                   verifier: signer, nowSeconds: 1_000) == .allowed)
    }

    @Test(arguments: [
        ([namespace("a", ["a:*"]), namespace("b", ["a:*"])], "namespace b: pattern a:* is also in namespace a"),
        ([namespace("a", [])], "namespace a: no pattern"),
        ([namespace("a", ["a:*"]) { $0.historyTTLSeconds = 0 }], "namespace a: history-ttl must be 1 to --history-meta-ttl (100): a history must not outlive its epoch"),
        ([namespace("a", ["a:*"]) { $0.historyTTLSeconds = 101 }], "namespace a: history-ttl must be 1 to --history-meta-ttl (100): a history must not outlive its epoch"),
        ([namespace("a", ["a:*"]) { $0.clientBacklog = 0 }], "namespace a: client-backlog must be at least 1"),
    ])
    func conflictingNamespacesAreRefused(_ namespaces: [ChannelNamespace], _ expected: String) {
        #expect(ChannelNamespace.problem(namespaces, historyMetaTTLSeconds: 100) == expected)
        #expect(ChannelNamespace.problem([Self.namespace("a", ["a:*"]) { $0.historyTTLSeconds = 100 }], historyMetaTTLSeconds: 100) == nil)
    }
}
