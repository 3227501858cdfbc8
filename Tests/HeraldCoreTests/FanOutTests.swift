import HeraldCrypto
import Testing
@testable import HeraldCore

/// The WebSocket rules through the state machines alone: no socket, no thread, an injected clock.

let secret = "0123456789abcdef0123"
let signer = TokenVerifier(secret: secret, hmac: LibCrypto.hmacSHA256)

func policy(maxSubscriptions: Int = 10, opsPerSecond: Double = 5, burst: Double = 5,
            anonymous: [String] = ["public:*"], tokens: Bool = true) -> ClientSession.Policy {
    ClientSession.Policy(maxSubscriptions: maxSubscriptions, opsPerSecond: opsPerSecond, opsBurst: burst,
                         anonymousPatterns: anonymous, verifier: tokens ? signer : nil)
}

func op(_ json: String) -> ClientSession.Event { .received(Array(json.utf8), binary: false) }

/// The frames a session has queued, as text.
func drain(_ session: inout ClientSession) -> [String] {
    guard case let .frames(frames) = session.outbox.nextBatch(maxFrames: 1000, maxBytes: 1 << 20, ring: { _ in nil }) else { return [] }
    return frames.map { String(decoding: $0, as: UTF8.self) }
}

@Suite struct ClientSessionTests {
    @Test func aValidTokenIsAnsweredAndItsExpiryAnnounced() {
        var s = ClientSession(policy: policy())
        let token = signer.sign(TokenClaims(sub: "u", exp: 2_000, channels: ["chat:*"]))
        let actions = s.handle(.opened(query: [("token", token), ("channel", "chat:1")]), monotonicMillis: 0, wallSeconds: 1_000)
        #expect(actions == [.sendSoon, .expires(at: 2_000), .tally(.subscribed), .subscribe(channel: "chat:1", resume: nil)])
        #expect(drain(&s) == [#"{"type":"authenticated","sub":"u","exp":2000}"#])
    }

    @Test func aBadTokenClosesWith4001NamingItsReason() {
        var s = ClientSession(policy: policy())
        let expired = signer.sign(TokenClaims(sub: "u", exp: 999, channels: ["*"]))
        let actions = s.handle(.opened(query: [("token", expired), ("channel", "chat:1")]), monotonicMillis: 0, wallSeconds: 1_000)
        #expect(actions == [.tally(.authFailure(.expired)), .close(code: 4001, reason: "invalid token: token expired", label: "expired")])
        var open = ClientSession(policy: policy(tokens: false))
        #expect(open.handle(op(#"{"op":"auth","token":"a.b.c"}"#), monotonicMillis: 0, wallSeconds: 0).last
                == .close(code: 4001, reason: "invalid token: tokens are not enabled on this server (no token keys)", label: "disabled"))
    }

    @Test func channelsOutsideTheTokenAndTheAnonymousOnesAreForbidden() {
        var s = ClientSession(policy: policy())
        #expect(s.handle(op(#"{"op":"subscribe","channel":"public:lobby"}"#), monotonicMillis: 0, wallSeconds: 0)
                == [.tally(.subscribed), .subscribe(channel: "public:lobby", resume: nil)])
        let refused = s.handle(op(#"{"op":"subscribe","channel":"chat:1"}"#), monotonicMillis: 0, wallSeconds: 0)
        #expect(refused == [.tally(.forbidden), .tally(.clientError), .sendSoon])
        #expect(drain(&s).last?.contains(#""code":"forbidden""#) == true)
    }

    @Test func subscriptionsPerConnectionAreLimitedButReplacingOneIsFine() {
        var s = ClientSession(policy: policy(maxSubscriptions: 1, anonymous: ["*"]))
        _ = s.handle(op(#"{"op":"subscribe","channel":"a"}"#), monotonicMillis: 0, wallSeconds: 0)
        s.outbox.subscribe(channel: "a", resume: nil, request: 1)   // what FanOut does with .subscribe
        #expect(s.handle(op(#"{"op":"subscribe","channel":"b"}"#), monotonicMillis: 0, wallSeconds: 0).first == .tally(.subscriptionLimit))
        #expect(s.handle(op(#"{"op":"subscribe","channel":"a"}"#), monotonicMillis: 0, wallSeconds: 0) == [.subscribe(channel: "a", resume: nil)])
    }

    @Test func framesOverTheRateAreDroppedAndToldOnceASecond() {
        var s = ClientSession(policy: policy(opsPerSecond: 5, burst: 5, anonymous: ["*"]))
        var limited = 0, notices = 0
        for i in 0..<20 {
            let actions = s.handle(op(#"{"op":"unsubscribe","channel":"c\#(i)"}"#), monotonicMillis: 100, wallSeconds: 0)
            if actions.contains(.tally(.rateLimited)) { limited += 1 }
            if actions.contains(.tally(.clientError)) { notices += 1 }
        }
        #expect(limited == 15 && notices == 1)
        // A second later: one more notice at most, and the bucket has refilled a little.
        let later = s.handle(op(#"{"op":"unsubscribe","channel":"x"}"#), monotonicMillis: 1_300, wallSeconds: 0)
        #expect(!later.contains(.tally(.rateLimited)))
    }

    @Test func binaryAndMalformedFramesGetErrorsAndKeepTheConnection() {
        var s = ClientSession(policy: policy(anonymous: ["*"]))
        #expect(s.handle(.received([1, 2], binary: true), monotonicMillis: 0, wallSeconds: 0) == [.tally(.clientError), .sendSoon])
        #expect(s.handle(op("{nope"), monotonicMillis: 0, wallSeconds: 0) == [.tally(.clientError), .sendSoon])
        let frames = drain(&s)
        #expect(frames.count == 2 && frames.allSatisfy { $0.contains(#""type":"error""#) })
    }

    @Test func aFreshTokenEndsTheSubscriptionsItNoLongerCovers() {
        var s = ClientSession(policy: policy(anonymous: []))
        let wide = signer.sign(TokenClaims(sub: "u", exp: 2_000, channels: ["a", "b"]))
        _ = s.handle(.opened(query: [("token", wide)]), monotonicMillis: 0, wallSeconds: 1_000)
        for (i, c) in ["a", "b"].enumerated() { s.outbox.subscribe(channel: c, resume: nil, request: UInt64(i)) }
        _ = drain(&s)
        let narrow = signer.sign(TokenClaims(sub: "u", exp: 3_000, channels: ["a"]))
        let actions = s.handle(op(#"{"op":"auth","token":"\#(narrow)"}"#), monotonicMillis: 0, wallSeconds: 1_500)
        #expect(actions.contains(.unsubscribed(channel: "b")) && !actions.contains(.unsubscribed(channel: "a")))
        #expect(actions.contains(.expires(at: 3_000)) && actions.contains(.tally(.forbidden)))
        let frames = drain(&s)
        #expect(frames.count == 3)  // authenticated, forbidden (op auth), unsubscribed
        #expect(frames[1].contains(#""op":"auth""#) && frames[2] == #"{"type":"unsubscribed","channel":"b"}"#)
    }

    @Test func subscribingAfterTheTokenExpiredClosesAtOnce() {
        var s = ClientSession(policy: policy(anonymous: []))
        _ = s.handle(.opened(query: [("token", signer.sign(TokenClaims(sub: "u", exp: 2_000, channels: ["a"])))]),
                     monotonicMillis: 0, wallSeconds: 1_000)
        #expect(s.handle(op(#"{"op":"subscribe","channel":"a"}"#), monotonicMillis: 0, wallSeconds: 2_000) == [.expired])
    }
}

@Suite struct FanOutTests {
    static let t0 = FanOut.Now(monotonicMicros: 1_000_000_000, wallMillis: 1_000_000)

    func fanOut(backlog: Int = 100, coalesceMicros: UInt64 = 0, session: ClientSession.Policy = policy(anonymous: ["*"])) -> FanOut {
        FanOut(settings: FanOut.Settings(session: session, clientBacklog: backlog, maxRingCapacity: backlog + 100,
                                         coalesceMicros: coalesceMicros, keepAliveMicros: 60_000_000))
    }

    func frame(_ seq: UInt64) -> [UInt8] { Array("m\(seq)".utf8) }
    func messages(_ seqs: ClosedRange<UInt64>, channel: String = "news", epoch: String = "e1") -> [SequencedMessage] {
        seqs.map { SequencedMessage(channel: channel, epoch: epoch, seq: $0, frame: frame($0)) }
    }
    func snapshot(_ seq: UInt64, epoch: String = "e1") -> HistorySnapshot {
        HistorySnapshot(epoch: epoch, seq: seq, frames: seq == 0 ? [] : (1...seq).map { frame($0) })
    }
    func at(_ micros: UInt64, from now: FanOut.Now = t0) -> FanOut.Now {
        FanOut.Now(monotonicMicros: now.monotonicMicros + micros, wallMillis: now.wallMillis + micros / 1000)
    }

    /// Everything written to `id` in answer to `actions`, feeding `.writeSoon` back as a socket
    /// that can always write would; other actions are returned.
    func written(_ f: inout FanOut, _ actions: [FanOut.Action], to id: UInt64, now: FanOut.Now = t0) -> (frames: [String], rest: [FanOut.Action]) {
        var queue = actions, frames: [String] = [], rest: [FanOut.Action] = []
        while !queue.isEmpty {
            let action = queue.removeFirst()
            switch action {
            case .writeSoon(let c) where c == id, .requestWritable(let c) where c == id:
                queue += f.handle(.writable(id), now: now)
            case let .write(c, batch, _, more) where c == id:
                frames += batch.map { String(decoding: $0, as: UTF8.self) }
                if more { queue += f.handle(.writable(id), now: now) }
            default:
                rest.append(action)
            }
        }
        return (frames, rest)
    }

    func historyRequest(in actions: [FanOut.Action]) -> UInt64? {
        for case let .readHistory(_, request) in actions { return request }
        return nil
    }

    @Test func historyThenLiveWithoutGapOrDuplicate() throws {
        var f = fanOut()
        let opened = f.handle(.opened(1, query: [("channel", "news")]), now: Self.t0)
        let request = try #require(historyRequest(in: opened))
        #expect(opened.contains(.schedule(atMicros: Self.t0.monotonicMicros + 60_000_000)))   // the keep-alive round
        // Live messages that race the history read: 2 and 3 are in the snapshot too.
        _ = f.handle(.live(messages(2...3)), now: Self.t0)
        let answered = f.handle(.history(channel: "news", requests: [request], snapshot: snapshot(3)), now: Self.t0)
        #expect(answered.contains(.tally(.replay(messages: 3))))
        var (frames, _) = written(&f, answered, to: 1)
        #expect(frames.first?.hasPrefix(#"{"type":"subscribed","channel":"news","epoch":"e1","seq":3,"replay":3"#) == true)
        #expect(Array(frames.dropFirst()) == ["m1", "m2", "m3"])
        (frames, _) = written(&f, f.handle(.live(messages(3...5)), now: Self.t0), to: 1)
        #expect(frames == ["m4", "m5"])
    }

    @Test func aCompressingConnectionGetsTheSharedPiecesBesideItsFramesAndOthersDoNot() throws {
        var f = fanOut()
        for (id, compresses) in [(UInt64(1), true), (2, false)] {
            let r = try #require(historyRequest(in: f.handle(.opened(id, query: [("channel", "news")], compresses: compresses), now: Self.t0)))
            _ = written(&f, f.handle(.history(channel: "news", requests: [r], snapshot: snapshot(1)), now: Self.t0), to: id)
        }
        var live = messages(2...3)
        live[0].piece = [0xAA]  // the node compressed 2 once; 3 was too small
        let actions = f.handle(.live(live), now: Self.t0)
        var byConnection: [UInt64: (frames: [[UInt8]], pieces: [[UInt8]?])] = [:]
        for case let .writeSoon(id) in actions {
            guard case let .frames(frames, pieces, _) = f.writeNext(id) else { Issue.record("nothing for \(id)"); continue }
            byConnection[id] = (frames, pieces)
        }
        #expect(byConnection[1]?.frames == [frame(2), frame(3)] && byConnection[1]?.pieces == [[0xAA], nil])
        #expect(byConnection[2]?.frames == [frame(2), frame(3)] && byConnection[2]?.pieces == [])
        // Control frames (replays, errors) carry none: the connection compresses them itself.
        _ = f.handle(.received(1, Array(#"{"op":"dance"}"#.utf8), binary: false), now: Self.t0)
        guard case let .frames(control, pieces, _) = f.writeNext(1) else { Issue.record("no error frame"); return }
        #expect(control.count == 1 && pieces == [nil])
    }

    @Test func aReplayCarriesTheSharedPiecesOfTheFramesItReplays() throws {
        var f = fanOut()
        let opened = f.handle(.opened(1, query: [("channel", "news"), ("since", "1"), ("epoch", "e1")], compresses: true), now: Self.t0)
        let r = try #require(historyRequest(in: opened))
        var history = snapshot(3)
        history.pieces = [[0x01], nil, [0x03]]
        _ = f.handle(.history(channel: "news", requests: [r], snapshot: history), now: Self.t0)
        guard case let .frames(frames, pieces, _) = f.writeNext(1) else { Issue.record("nothing written"); return }
        // subscribed (none), then 2 and 3: the pieces of exactly the frames replayed.
        #expect(frames.dropFirst().map { String(decoding: $0, as: UTF8.self) } == ["m2", "m3"])
        #expect(pieces == [nil, nil, [0x03]])
    }

    @Test func aResubscribeNeverRepeatsASeq() throws {
        var f = fanOut()
        var all: [String] = []
        let r1 = try #require(historyRequest(in: f.handle(.opened(1, query: [("channel", "news")]), now: Self.t0)))
        all += written(&f, f.handle(.history(channel: "news", requests: [r1], snapshot: snapshot(2)), now: Self.t0), to: 1).frames
        _ = f.handle(.live(messages(3...3)), now: Self.t0)
        all += written(&f, [.writeSoon(1)], to: 1).frames
        let r2 = try #require(historyRequest(in: f.handle(.received(1, Array(#"{"op":"subscribe","channel":"news"}"#.utf8), binary: false), now: Self.t0)))
        all += written(&f, f.handle(.history(channel: "news", requests: [r2], snapshot: snapshot(4)), now: Self.t0), to: 1).frames
        all += written(&f, f.handle(.live(messages(4...5)), now: Self.t0), to: 1).frames
        let seqs = all.filter { $0.hasPrefix("m") }
        #expect(seqs == ["m1", "m2", "m3", "m4", "m5"])
    }

    @Test func aBusyChannelIsWrittenOncePerCoalescingWindow() throws {
        var f = fanOut(coalesceMicros: 10_000)
        let r = try #require(historyRequest(in: f.handle(.opened(1, query: [("channel", "news")]), now: Self.t0)))
        _ = written(&f, f.handle(.history(channel: "news", requests: [r], snapshot: snapshot(0)), now: Self.t0), to: 1)
        // The first message of a quiet channel goes out at once.
        #expect(written(&f, f.handle(.live(messages(1...1)), now: Self.t0), to: 1).frames == ["m1"])
        // The next ones, 2 ms and 5 ms later, wait for the end of the window...
        let second = f.handle(.live(messages(2...2)), now: at(2_000))
        #expect(second == [.schedule(atMicros: Self.t0.monotonicMicros + 10_000)])
        #expect(f.handle(.live(messages(3...3)), now: at(5_000)).isEmpty)
        // ...and share one write when it ends.
        #expect(written(&f, f.handle(.timer, now: at(10_000)), to: 1).frames == ["m2", "m3"])
    }

    @Test func aClientThatFallsTooFarBehindIsClosedWith4008AndOthersGoOn() throws {
        var f = fanOut(backlog: 3)
        for id: UInt64 in [1, 2] {
            let r = try #require(historyRequest(in: f.handle(.opened(id, query: [("channel", "news")]), now: Self.t0)))
            _ = written(&f, f.handle(.history(channel: "news", requests: [r], snapshot: snapshot(0)), now: Self.t0), to: id)
        }
        var slowClosed = false
        for seq: UInt64 in 1...12 {
            let actions = f.handle(.live(messages(seq...seq)), now: at(seq * 1_000_000))
            // Client 2 reads everything; client 1 never becomes writable.
            let (frames, rest) = written(&f, actions, to: 2, now: at(seq * 1_000_000))
            #expect(frames == ["m\(seq)"])
            if rest.contains(.close(1, code: 4008, reason: "cannot continue on news: more than 3 messages behind, or its epoch changed",
                                    label: "resume", graceSeconds: 10)) {
                #expect(rest.contains(.tally(.slowConsumerClose)))
                slowClosed = true
            }
        }
        #expect(slowClosed)
    }

    @Test func aNamespaceSetsItsChannelsBacklog() throws {
        var prices = ChannelNamespace(name: "prices", patterns: ["prices:*"])
        prices.clientBacklog = 3
        var session = policy(anonymous: ["*"])
        session.namespaces = [prices]
        var f = fanOut(backlog: 100, session: session)
        // Client 1 on prices:eur and client 2 on news; neither ever becomes writable.
        for (id, channel): (UInt64, String) in [(1, "prices:eur"), (2, "news")] {
            let r = try #require(historyRequest(in: f.handle(.opened(id, query: [("channel", channel)]), now: Self.t0)))
            _ = written(&f, f.handle(.history(channel: channel, requests: [r], snapshot: snapshot(0)), now: Self.t0), to: id)
        }
        var closed: [UInt64] = []
        for seq: UInt64 in 1...12 {
            let live = messages(seq...seq, channel: "prices:eur") + messages(seq...seq, channel: "news")
            for case let .close(id, 4008, reason, _, _) in f.handle(.live(live), now: at(seq * 1_000_000)) {
                #expect(reason == "cannot continue on prices:eur: more than 3 messages behind, or its epoch changed")
                closed.append(id)
            }
        }
        #expect(closed == [1])
    }

    @Test func aTokenExpiringWhileConnectedClosesWith4002AtThatSecond() {
        var f = fanOut(session: policy(anonymous: []))
        let token = signer.sign(TokenClaims(sub: "u", exp: Self.t0.wallMillis / 1000 + 30, channels: ["a"]))
        let opened = f.handle(.opened(7, query: [("token", token)]), now: Self.t0)
        #expect(opened.contains(.schedule(atMicros: Self.t0.monotonicMicros + 30_000_000)))
        #expect(f.handle(.timer, now: at(29_000_000)).allSatisfy { if case .close = $0 { false } else { true } })
        let due = f.handle(.timer, now: at(30_000_000))
        #expect(due.contains(.close(7, code: 4002, reason: "token expired", label: "token_expired", graceSeconds: 5)))
        #expect(due.contains(.tally(.tokenExpiredClose)))
    }

    @Test func aRestartedSequenceMakesEverySubscriberResume() throws {
        var f = fanOut()
        let r = try #require(historyRequest(in: f.handle(.opened(1, query: [("channel", "news")]), now: Self.t0)))
        _ = written(&f, f.handle(.history(channel: "news", requests: [r], snapshot: snapshot(2)), now: Self.t0), to: 1)
        _ = written(&f, f.handle(.live(messages(3...3)), now: Self.t0), to: 1)
        let actions = f.handle(.live(messages(1...1, epoch: "e2")), now: Self.t0)
        #expect(actions.contains(.close(1, code: 4008, reason: "channel news restarted its sequence", label: "resume", graceSeconds: 10)))
    }

    @Test func closingForgetsTheConnectionAndAnEmptyChannelsRing() throws {
        var f = fanOut()
        _ = f.handle(.opened(1, query: [("channel", "news"), ("channel", "sport")]), now: Self.t0)
        #expect(f.subscribers(of: "news") == [1] && f.ring("news") != nil)
        let actions = f.handle(.closed(1), now: Self.t0)
        #expect(Set(actions.compactMap { if case let .unwatch(c) = $0 { c } else { nil } }) == ["news", "sport"])
        #expect(actions.count == 3 && actions.last == .tally(.unsubscribed(count: 2)))
        #expect(f.subscribers(of: "news").isEmpty && f.ring("news") == nil && f.sessions.isEmpty)
    }

    @Test func subscribedChannelsWithoutMessagesAreKeptAliveEachRound() throws {
        var f = fanOut()
        _ = f.handle(.opened(1, query: [("channel", "quiet"), ("channel", "busy")]), now: Self.t0)
        _ = f.handle(.live(messages(1...1, channel: "busy")), now: Self.t0)
        let round = f.handle(.timer, now: at(60_000_000))
        #expect(round.contains(.keepEmptyAlive(channels: ["quiet"])))
        #expect(round.contains(.schedule(atMicros: Self.t0.monotonicMicros + 120_000_000)))
        _ = f.handle(.closed(1), now: at(61_000_000))
        #expect(!f.handle(.timer, now: at(120_000_000)).contains { if case .keepEmptyAlive = $0 { true } else { false } })
    }

    @Test func framesFromAClosingConnectionAreIgnored() throws {
        var f = fanOut(session: policy(tokens: true))
        let closed = f.handle(.opened(1, query: [("token", "garbage")]), now: Self.t0)
        #expect(closed.contains(.close(1, code: 4001, reason: "invalid token: not a JWT (three dot-separated parts)", label: "malformed", graceSeconds: 5)))
        #expect(f.handle(.received(1, Array(#"{"op":"subscribe","channel":"public:x"}"#.utf8), binary: false), now: Self.t0).isEmpty)
    }
}

@Suite struct LiveGapTrackerTests {
    func m(_ seq: UInt64, _ channel: String = "c", epoch: String = "e") -> SequencedMessage {
        SequencedMessage(channel: channel, epoch: epoch, seq: seq, frame: Array("m\(seq)".utf8))
    }

    @Test func deliversInOrderSkipsCopiesAndAsksForWhatIsMissing() {
        var t = LiveGapTracker()
        #expect(t.see(m(1)) == .deliver)
        #expect(t.see(m(2)) == .deliver)
        #expect(t.see(m(2)) == .skip)
        #expect(t.see(m(1)) == .skip)
        #expect(t.see(m(5)) == .repair(after: 2, before: 5))
        #expect(t.see(m(6)) == .deliver)
        #expect(t.see(m(1, epoch: "e2")) == .deliver)   // a new epoch starts over
        #expect(t.see(m(9, "other")) == .deliver)        // a channel seen first mid-stream
    }

    @Test func aRepairIsFilledOnlyWhenRedisStillHasEverySeq() {
        let snapshot = HistorySnapshot(epoch: "e", seq: 6, frames: (3...6).map { Array("m\($0)".utf8) })
        #expect(LiveGapTracker.fill(snapshot, channel: "c", epoch: "e", after: 2, before: 5) == [m(3), m(4)])
        #expect(LiveGapTracker.fill(snapshot, channel: "c", epoch: "e", after: 1, before: 5) == nil)   // seq 2 is gone
        #expect(LiveGapTracker.fill(snapshot, channel: "c", epoch: "x", after: 2, before: 5) == nil)   // another epoch
    }

    @Test func catchingUpAfterAReconnect() {
        var t = LiveGapTracker()
        _ = t.see(m(4))
        #expect(t.catchUp("c", snapshot: HistorySnapshot(epoch: "e", seq: 4, frames: [])) == .upToDate)
        #expect(t.catchUp("c", snapshot: HistorySnapshot(epoch: "e", seq: 7, frames: [])) == .repair(after: 4, before: 8))
        #expect(t.see(m(7)) == .skip)   // caught up to 7 already
        #expect(t.catchUp("c", snapshot: HistorySnapshot(epoch: "new", seq: 1, frames: [])) == .broken)
        #expect(t.catchUp("c", snapshot: HistorySnapshot(epoch: "new", seq: 1, frames: [])) == .upToDate)  // forgotten
    }

    /// A channel nothing was seen of live (subscribed, no message since): what the lost
    /// connection missed is unknown, so every retained message is handed on, once.
    @Test func aChannelSeenNothingOfIsSeededWithWhatRedisRetains() {
        var t = LiveGapTracker()
        #expect(t.catchUp("q", snapshot: HistorySnapshot(epoch: "e", seq: 0, frames: [])) == .upToDate)
        #expect(t.catchUp("q", snapshot: HistorySnapshot(epoch: "e", seq: 9, frames: (7...9).map { Array("m\($0)".utf8) }))
                == .seed(after: 6, before: 10))
        #expect(t.see(m(9, "q")) == .skip && t.see(m(10, "q")) == .deliver)
        t.forget("q")
        #expect(t.see(m(12, "q")) == .deliver)   // forgotten: a first message again, no repair
    }
}

@Suite struct SequencerPipelineTests {
    func batch(_ delivery: UInt64, publish: UInt64, dead: Int = 0, at: UInt64 = 0) -> SequencerPipeline.Batch {
        .init(lastDelivery: delivery, lastPublish: publish, deadLettered: dead, publishedAtMillis: at)
    }

    @Test func batchesAreAckedInOrderOnlyOnceTheirPublishesAreConfirmed() {
        var p = SequencerPipeline(maxInFlight: 3, confirmTimeoutMillis: 10_000)
        p.published(batch(10, publish: 2))
        p.published(batch(25, publish: 5, dead: 1))
        p.published(batch(30, publish: 9))
        #expect(p.isFull && p.oldestPublish == 2)
        #expect(p.settle(through: 1, nowMillis: 100) == [])                 // nothing confirmed yet: nothing acked
        #expect(p.settle(through: 6, nowMillis: 100) == [.ack(through: 25, batches: 2, deadLettered: 1)])
        #expect(p.inFlight == [batch(30, publish: 9)])
        #expect(p.settle(through: 8, nowMillis: 100) == [])                 // the third one's publish is 9
        #expect(p.settle(through: 9, nowMillis: 100) == [.ack(through: 30, batches: 1, deadLettered: 0)])
        #expect(p.inFlight.isEmpty && !p.isFull)
    }

    @Test func aConfirmThatNeverComesFailsTheConnectionAndNothingIsAcked() {
        var p = SequencerPipeline(maxInFlight: 4, confirmTimeoutMillis: 10_000)
        p.published(batch(10, publish: 2, at: 1_000))
        #expect(p.settle(through: 0, nowMillis: 11_000) == [])
        #expect(p.settle(through: 0, nowMillis: 11_001) == [.fail("no publisher confirm within 10000 ms")])
        p.connectionLost()
        #expect(p.inFlight.isEmpty && p.settle(through: 100, nowMillis: 20_000) == [])   // redelivered, never acked
    }

    @Test func aStoreRedisRefusesIsDeadLetteredAndKnownIdsKeepTheirFrame() {
        let refused = SequencerPipeline.stored(channel: "c", sequenced: nil, reply: "WRONGTYPE", newFrame: { _, _ in [] })
        #expect(refused == .deadLetter(reason: "Redis refused to store it: WRONGTYPE"))
        let stored = SequencerPipeline.stored(channel: "c", sequenced: ("e", [(seq: 7, stored: nil), (seq: 3, stored: Array("old".utf8))]),
                                              reply: "", newFrame: { i, seq in Array("new \(i) \(seq)".utf8) })
        #expect(stored == .publish([SequencedMessage(channel: "c", epoch: "e", seq: 7, frame: Array("new 0 7".utf8)),
                                    SequencedMessage(channel: "c", epoch: "e", seq: 3, frame: Array("old".utf8))], duplicates: 1))
    }
}
