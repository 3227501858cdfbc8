import Testing
@testable import HeraldCore

/// The connect proxy's answers as the connection sees them: an identity, or (with
/// `--connect-proxy-refusal close`) a refusal the browser can read as a close code.
@Suite struct ConnectProxyTests {
    @Test func aRefusalAttachmentCarriesItsStatusAndAnIdentityCarriesNone() throws {
        #expect(ConnectIdentity.refusal(ConnectIdentity.refusalAttachment(status: 401)) == 401)
        #expect(ConnectIdentity.refusal(ConnectIdentity.refusalAttachment(status: 403)) == 403)
        let identity = ConnectIdentity.attachment(TokenClaims(sub: "ann", exp: ConnectIdentity.noExpiry, channels: ["team:*"]))
        #expect(ConnectIdentity.refusal(identity) == nil)
        let parsed = try ConnectIdentity.parse(identity, nowSeconds: 0).get()
        #expect(parsed.sub == "ann" && parsed.channels == ["team:*"])
    }

    @Test func aRefusedConnectionIsClosedWith4001Or4003AndSubscribesToNothing() {
        var f = FanOut(settings: FanOut.Settings(session: policy(anonymous: ["*"]), clientBacklog: 100, maxRingCapacity: 200,
                                                 coalesceMicros: 0, keepAliveMicros: 60_000_000))
        let now = FanOut.Now(monotonicMicros: 1_000_000, wallMillis: 1_000)
        let reason = "the application refused this connection (connect proxy)"
        let unauthorized = f.handle(.opened(1, query: [("channel", "news")], refusal: 401), now: now)
        #expect(unauthorized.contains(.close(1, code: 4001, reason: reason, label: "connect_proxy", graceSeconds: 5)))
        let forbidden = f.handle(.opened(2, query: [("channel", "news")], refusal: 403), now: now)
        #expect(forbidden.contains(.close(2, code: 4003, reason: reason, label: "connect_proxy", graceSeconds: 5)))
        for action in unauthorized + forbidden {
            if case .readHistory = action { Issue.record("a refused connection asked for history: \(action)") }
        }
        // The same query, admitted, subscribes: the refusal is what stopped it above.
        let admitted = f.handle(.opened(3, query: [("channel", "news")]), now: now)
        #expect(admitted.contains { if case .readHistory = $0 { true } else { false } })
    }
}
