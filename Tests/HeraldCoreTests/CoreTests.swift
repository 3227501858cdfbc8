import Testing
@testable import HeraldCore
import HeraldCrypto

@Suite struct ChannelNameTests {
    @Test func acceptsTheProtocolAlphabet() {
        #expect(ChannelName.isValid("news"))
        #expect(ChannelName.isValid("A-z_0.9:@-"))
        #expect(ChannelName.isValid(String(repeating: "a", count: 128)))
    }

    @Test func rejectsEverythingElse() {
        #expect(!ChannelName.isValid(""))
        #expect(!ChannelName.isValid(String(repeating: "a", count: 129)))
        #expect(!ChannelName.isValid("a b"))
        #expect(!ChannelName.isValid("a/b"))
        #expect(!ChannelName.isValid("é"))
        #expect(!ChannelName.isValid("a\"b"))
    }
}

@Suite struct JSONTests {
    @Test func minifyKeepsStringsAndDropsWhitespace() throws {
        let out = try JSON.minify(Array("{ \"a\" : [1, 2],\n \"b\": \"x y\\n\" }".utf8))
        #expect(String(decoding: out, as: UTF8.self) == "{\"a\":[1,2],\"b\":\"x y\\n\"}")
    }

    @Test func rejectsInvalidJSON() {
        for bad in ["{", "[1,]", "{\"a\" 1}", "01", "\"\u{01}\"", "nul", "1 2", "\"\\ud800\"", "{\"a\":1}}"] {
            #expect(throws: JSONError.self) { try JSON.minify(Array(bad.utf8)) }
        }
        #expect(throws: JSONError.self) { try JSON.minify([0x22, 0xFF, 0x22]) }
        #expect(throws: JSONError.self) { try JSON.minify([0x7B, 0x22, 0xC3, 0x22, 0x3A, 0x31, 0x7D]) } // {"\xC3":1}
    }

    @Test func minifyAcceptsUnicodeAndEscapes() throws {
        let text = "{\"clé\": \"😀 \\u00e9\\ud83d\\ude00\\n\\\"\"}"
        let out = try JSON.minify(Array(text.utf8))
        #expect(String(decoding: out, as: UTF8.self) == "{\"clé\":\"😀 \\u00e9\\ud83d\\ude00\\n\\\"\"}")
    }

    @Test func boundsNesting() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONError.self) { try JSON.parse(Array(deep.utf8)) }
    }

    @Test func parsesUnicodeEscapes() throws {
        let v = try JSON.parse(Array("\"\\u00e9\\ud83d\\ude00\"".utf8))
        #expect(v == .string("é😀"))
    }

    @Test func escapesControlCharacters() {
        var out = [UInt8]()
        JSON.appendString(Array("a\"\\\n\u{01}".utf8), to: &out)
        #expect(String(decoding: out, as: UTF8.self) == "\"a\\\"\\\\\\n\\u0001\"")
    }
}

@Suite struct EnvelopeTests {
    @Test func jsonBodyIsEmbedded() throws {
        let e = try MessageEnvelope(channel: "news", id: "m1", timeMillis: 5, body: Array("{ \"a\": 1 }".utf8),
                                    contentType: "Application/JSON; charset=utf-8")
        #expect(String(decoding: e.frame(seq: 42), as: UTF8.self)
                == "{\"type\":\"message\",\"channel\":\"news\",\"seq\":42,\"id\":\"m1\",\"time\":5,\"data\":{\"a\":1}}")
    }

    @Test func textAndBinaryBodies() throws {
        let text = try MessageEnvelope(channel: "c", id: "i", timeMillis: 1, body: Array("hi\n".utf8), contentType: nil)
        #expect(String(decoding: text.frame(seq: 1), as: UTF8.self).hasSuffix("\"data\":\"hi\\n\"}"))
        let bin = try MessageEnvelope(channel: "c", id: "i", timeMillis: 1, body: [0xFF, 0x00], contentType: "text/plain")
        #expect(String(decoding: bin.frame(seq: 1), as: UTF8.self).hasSuffix("\"data\":\"/wA=\",\"encoding\":\"base64\"}"))
    }

    @Test func badJSONIsRefusedWithCode() {
        #expect(throws: EnvelopeError.self) {
            try MessageEnvelope(channel: "c", id: "i", timeMillis: 1, body: Array("{".utf8), contentType: "application/json")
        }
        #expect(Admission.check(channel: "bad name", bodySize: 1, maxBytes: 10)?.code == .badChannel)
        #expect(Admission.check(channel: "ok", bodySize: 11, maxBytes: 10)?.code == .tooLarge)
        #expect(Admission.check(channel: "ok", bodySize: 10, maxBytes: 10) == nil)
        #expect(EnvelopeError(code: .badJSON, message: "x").header == "bad_json: x")
    }

    @Test func jsonContentTypeIgnoresCaseParametersAndSpaces() {
        for yes in ["application/json", "Application/JSON; charset=utf-8", " application/json ", "application/json ;x=y", "application/json;"] {
            #expect(MessageEnvelope.isJSONContentType(yes), "\(yes)")
        }
        for no in ["", "application/js", "application/jsonx", "application/json-patch+json", "text/plain", "application/ json", "xapplication/json"] {
            #expect(!MessageEnvelope.isJSONContentType(no), "\(no)")
        }
    }

    @Test func seqIsReadFromAFrame() throws {
        let e = try MessageEnvelope(channel: "s", id: "\"seq\":9", timeMillis: 1, body: [], contentType: nil)
        #expect(MessageEnvelope.seq(of: e.frame(seq: 1234)) == 1234)
    }

    @Test func base64() {
        #expect(String(decoding: Base64.encode(Array("foobar".utf8)), as: UTF8.self) == "Zm9vYmFy")
        #expect(String(decoding: Base64.encode(Array("fooba".utf8)), as: UTF8.self) == "Zm9vYmE=")
        #expect(String(decoding: Base64.encode(Array("f".utf8)), as: UTF8.self) == "Zg==")
    }
}

@Suite struct ClientOpTests {
    @Test func subscribeWithAndWithoutResume() throws {
        #expect(try ClientOpParser.parse(Array(#"{"op":"subscribe","channel":"a"}"#.utf8)).get() == .subscribe(channel: "a", resume: nil))
        #expect(try ClientOpParser.parse(Array(#"{"op":"subscribe","channel":"a","since":41,"epoch":"e1"}"#.utf8)).get()
                == .subscribe(channel: "a", resume: ResumePosition(since: 41, epoch: "e1")))
        #expect(try ClientOpParser.parse(Array(#"{"op":"unsubscribe","channel":"a"}"#.utf8)).get() == .unsubscribe(channel: "a"))
    }

    @Test func errorsCarryTheRightCode() {
        func code(_ s: String) -> ClientError? {
            if case let .failure(e) = ClientOpParser.parse(Array(s.utf8)) { return e }
            return nil
        }
        #expect(code("{oops")?.code == .badRequest)
        #expect(code("{oops")?.op == nil)
        #expect(code("[1]")?.code == .badRequest)
        #expect(code(#"{"op":"jump"}"#)?.code == .unknownOp)
        #expect(code(#"{"op":"jump"}"#)?.op == "jump")
        #expect(code(#"{"op":"subscribe","channel":"a b"}"#)?.code == .badChannel)
        #expect(code(#"{"op":"subscribe","channel":"a","since":-1}"#)?.code == .badRequest)
        #expect(code(#"{"op":"subscribe","channel":"a","since":1.5}"#)?.code == .badRequest)
        #expect(code(#"{"op":"subscribe"}"#)?.code == .badRequest)
    }

    @Test func connectURL() {
        let r = ConnectRequest.parse(query: "channel=a&channel=b%20c&channel=d")
        #expect(r.subscriptions.map(\.channel) == ["a", "d"])
        #expect(r.errors.map(\.code) == [.badChannel])
        let resume = ConnectRequest.parse(query: "channel=a&since=3&epoch=e")
        #expect(resume.subscriptions.first?.resume == ResumePosition(since: 3, epoch: "e"))
        let several = ConnectRequest.parse(query: "channel=a&channel=b&since=3")
        #expect(several.subscriptions.isEmpty && several.errors.map(\.code) == [.badRequest])
    }
}

@Suite struct ReplayPlannerTests {
    func frames(_ range: ClosedRange<UInt64>) -> [[UInt8]] { range.map { Array("f\($0)".utf8) } }
    let snapshot = HistorySnapshot(epoch: "e1", seq: 150, frames: (51...150).map { Array("f\($0)".utf8) })

    @Test func noSinceReplaysEverything() {
        let p = ReplayPlanner.plan(channel: "c", snapshot: snapshot, resume: nil)
        #expect(p.replay.count == 100 && p.recovery == nil)
        #expect(String(decoding: p.subscribed, as: UTF8.self) == #"{"type":"subscribed","channel":"c","epoch":"e1","seq":150,"replay":100}"#)
    }

    @Test func sinceInsideTheWindowRecovers() {
        let p = ReplayPlanner.plan(channel: "c", snapshot: snapshot, resume: ResumePosition(since: 120, epoch: "e1"))
        #expect(Array(p.replay) == frames(121...150))
        #expect(p.recovery == .init(recovered: true, missed: 0))
    }

    @Test func sinceBeforeTheWindowCountsMissed() {
        let p = ReplayPlanner.plan(channel: "c", snapshot: snapshot, resume: ResumePosition(since: 10, epoch: nil))
        #expect(Array(p.replay) == frames(51...150))
        #expect(p.recovery == .init(recovered: false, missed: 40))
        let edge = ReplayPlanner.plan(channel: "c", snapshot: snapshot, resume: ResumePosition(since: 50, epoch: nil))
        #expect(edge.recovery == .init(recovered: true, missed: 0) && edge.replay.count == 100)
    }

    @Test func otherEpochOrFutureSinceIsUnrecoverable() {
        for resume in [ResumePosition(since: 140, epoch: "old"), ResumePosition(since: 151, epoch: "e1")] {
            let p = ReplayPlanner.plan(channel: "c", snapshot: snapshot, resume: resume)
            #expect(p.recovery == .init(recovered: false, missed: nil) && p.replay.count == 100)
            #expect(String(decoding: p.subscribed, as: UTF8.self).hasSuffix(#""recovered":false,"missed":null}"#))
        }
    }

    @Test func emptyListCountsEverythingMissed() {
        let empty = HistorySnapshot(epoch: "e", seq: 7, frames: [])
        #expect(ReplayPlanner.plan(channel: "c", snapshot: empty, resume: ResumePosition(since: 3, epoch: nil)).recovery
                == .init(recovered: false, missed: 4))
        #expect(ReplayPlanner.plan(channel: "c", snapshot: empty, resume: ResumePosition(since: 7, epoch: nil)).recovery
                == .init(recovered: true, missed: 0))
    }

    @Test func resubscribeSkipsWhatWasQueued() {
        let p = ReplayPlanner.plan(channel: "c", snapshot: snapshot, resume: nil, alreadyQueued: 145)
        #expect(Array(p.replay) == frames(146...150))
    }
}

@Suite struct RingAndOutboxTests {
    func f(_ n: UInt64) -> [UInt8] { Array("m\(n)".utf8) }

    @Test func ringKeepsConsecutiveSeqsAndEvicts() {
        let ring = ChannelRing(capacity: 3)
        #expect(ring.append(seq: 5, epoch: "e", frame: f(5)) == .appended)
        #expect(ring.append(seq: 5, epoch: "e", frame: f(5)) == .stale)
        for s: UInt64 in 6...8 { #expect(ring.append(seq: s, epoch: "e", frame: f(s)) == .appended) }
        #expect(ring.lookup(5) == .evicted)
        #expect(ring.lookup(6) == .frame(f(6)))
        #expect(ring.lookup(9) == .notYet)
        #expect(ring.append(seq: 11, epoch: "e", frame: f(11)) == .restarted)
        #expect(ring.lookup(10) == .evicted && ring.lookup(11) == .frame(f(11)))
        #expect(ring.append(seq: 1, epoch: "e2", frame: f(1)) == .restarted)
    }

    /// The replay/live merge: live frames that were already in the snapshot are skipped, and the
    /// first live frame after the snapshot follows the replay without a gap.
    @Test func replayThenLiveWithoutGapOrDuplicate() {
        let ring = ChannelRing(capacity: 100)
        var box = Outbox()
        box.subscribe(channel: "c", resume: nil, request: 1)
        for s: UInt64 in 8...10 { _ = ring.append(seq: s, epoch: "e", frame: f(s)) } // arrived while the read ran
        let snap = HistorySnapshot(epoch: "e", seq: 9, frames: [f(8), f(9)])
        #expect(box.apply(channel: "c", request: 0, snapshot: snap) == nil) // stale request id
        #expect(box.apply(channel: "c", request: 1, snapshot: snap) != nil)
        _ = ring.append(seq: 11, epoch: "e", frame: f(11))
        guard case let .frames(out) = box.nextBatch(maxFrames: 100, maxBytes: 1 << 20, ring: { _ in ring }) else {
            Issue.record("no frames"); return
        }
        #expect(out.dropFirst().map { String(decoding: $0, as: UTF8.self) } == ["m8", "m9", "m10", "m11"])
        #expect(box.nextBatch(maxFrames: 100, maxBytes: 1 << 20, ring: { _ in ring }) == .nothing)
    }

    @Test func batchesRespectLimitsAndKeepOrder() {
        let ring = ChannelRing(capacity: 1000)
        var box = Outbox()
        box.subscribe(channel: "c", resume: nil, request: 1)
        _ = box.apply(channel: "c", request: 1, snapshot: HistorySnapshot(epoch: "e", seq: 0, frames: []))
        _ = box.nextBatch(maxFrames: 10, maxBytes: 1000, ring: { _ in ring }) // the subscribed frame
        for s: UInt64 in 1...25 { _ = ring.append(seq: s, epoch: "e", frame: f(s)) }
        var seen: [String] = []
        while case let .frames(out) = box.nextBatch(maxFrames: 10, maxBytes: 1000, ring: { _ in ring }) {
            #expect(out.count <= 10)
            seen += out.map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(seen == (1...25).map { "m\($0)" })
    }

    @Test func slowConsumerMustResume() {
        let ring = ChannelRing(capacity: 5)
        var box = Outbox()
        box.subscribe(channel: "c", resume: nil, request: 1)
        _ = box.apply(channel: "c", request: 1, snapshot: HistorySnapshot(epoch: "e", seq: 0, frames: []))
        for s: UInt64 in 1...6 { _ = ring.append(seq: s, epoch: "e", frame: f(s)) }
        #expect(box.mustResume(channel: "c", ring: ring))
        _ = box.nextBatch(maxFrames: 1, maxBytes: 1 << 20, ring: { _ in ring }) // drains the subscribed frame
        if case .resume = box.nextBatch(maxFrames: 10, maxBytes: 1 << 20, ring: { _ in ring }) {} else {
            Issue.record("expected resume")
        }
    }

    @Test func controlBacklogIsBounded() {
        var box = Outbox(maxControlBytes: 10)
        box.enqueue(Array(repeating: 1, count: 11))
        if case .resume = box.nextBatch(maxFrames: 10, maxBytes: 100, ring: { _ in nil }) {} else {
            Issue.record("expected resume")
        }
    }

    /// A replay larger than the control budget is history the operator kept: it goes out whole,
    /// in batches, and live frames follow it (before, it was a 4008 the resume met again).
    @Test func aReplayOverTheBudgetGoesOutWholeThenLive() {
        let ring = ChannelRing(capacity: 100)
        var box = Outbox(maxControlBytes: 100)
        box.subscribe(channel: "c", resume: nil, request: 1)
        #expect(box.apply(channel: "c", request: 1, snapshot: HistorySnapshot(epoch: "e", seq: 30, frames: (1...30).map(f))) != nil)
        _ = ring.append(seq: 31, epoch: "e", frame: f(31))
        // The client keeps asking things meanwhile: a budget's worth of answers still fits.
        box.enqueue(Array("answer".utf8))
        var seen: [String] = []
        while case let .frames(out) = box.nextBatch(maxFrames: 4, maxBytes: 1 << 20, ring: { _ in ring }) {
            seen += out.map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(seen.dropFirst().elementsEqual((1...30).map { "m\($0)" } + ["answer", "m31"]))
        // Once the queue is empty the allowance is gone: the plain budget holds again.
        box.enqueue(Array(repeating: 1, count: 101))
        #expect(box.nextBatch(maxFrames: 4, maxBytes: 1 << 20, ring: { _ in ring }) == .resume(reason: "too far behind"))
    }

    /// A second replay that arrives while the first has the queue past its budget is not queued:
    /// the first goes out whole, then the connection resumes, and nothing of the second channel
    /// (not its subscribed frame, not a live frame) goes out before that.
    @Test func aReplayWhileTheQueueIsOverBudgetWaitsForTheResume() {
        let ring = ChannelRing(capacity: 100)
        var box = Outbox(maxControlBytes: 100)
        box.subscribe(channel: "a", resume: nil, request: 1)
        box.subscribe(channel: "b", resume: nil, request: 2)
        #expect(box.apply(channel: "a", request: 1, snapshot: HistorySnapshot(epoch: "e", seq: 20, frames: (1...20).map(f))) != nil)
        #expect(box.apply(channel: "b", request: 2, snapshot: HistorySnapshot(epoch: "e", seq: 5, frames: (1...5).map(f))) == nil)
        _ = ring.append(seq: 21, epoch: "e", frame: f(21))
        var seen: [String] = []
        var last = Outbox.Batch.nothing
        while true {
            last = box.nextBatch(maxFrames: 8, maxBytes: 1 << 20, ring: { _ in ring })
            guard case let .frames(out) = last else { break }
            seen += out.map { String(decoding: $0, as: UTF8.self) }
            #expect(box.hasControl) // the resume is still to come: the writer keeps asking
        }
        #expect(seen.count == 21 && seen.first!.contains("\"channel\":\"a\"") && seen.dropFirst().elementsEqual((1...20).map { "m\($0)" }))
        #expect(last == .resume(reason: "too far behind: replays over 100 bytes, resume to continue"))
    }

    /// The first replay is taken when the queue is within its budget, even a big one after a
    /// small one: every resume makes progress.
    @Test func aReplayIsTakenWhileTheQueueIsWithinItsBudget() {
        var box = Outbox(maxControlBytes: 200)
        box.subscribe(channel: "a", resume: nil, request: 1)
        box.subscribe(channel: "b", resume: nil, request: 2)
        #expect(box.apply(channel: "a", request: 1, snapshot: HistorySnapshot(epoch: "e", seq: 1, frames: [f(1)])) != nil)
        #expect(box.apply(channel: "b", request: 2, snapshot: HistorySnapshot(epoch: "e", seq: 90, frames: (1...90).map(f))) != nil)
        var count = 0
        while case let .frames(out) = box.nextBatch(maxFrames: 16, maxBytes: 1 << 20, ring: { _ in nil }) { count += out.count }
        #expect(count == 2 + 1 + 90)
    }

    @Test func liveBatchRoundTrip() {
        let m = [SequencedMessage(channel: "a", epoch: "e", seq: 1, frame: Array("{\"x\":\"\\t\"}".utf8)),
                 SequencedMessage(channel: "b:c", epoch: "e2", seq: 99, frame: Array("{}".utf8))]
        #expect(LiveBatch.decode(LiveBatch.encode(m)) == m)
    }

    @Test func backoffIsCapped() {
        var b = Backoff(initialMillis: 100, capMillis: 1000)
        #expect((0..<6).map { _ in b.next() } == [100, 200, 400, 800, 1000, 1000])
        b.reset()
        #expect(b.next() == 100)
    }

    @Test func backoffJitterStaysInTheUpperHalfOfTheCeiling() {
        var low = Backoff(initialMillis: 100, capMillis: 1000), high = low
        #expect((0..<6).map { _ in low.next(jitter: 0) } == [50, 100, 200, 400, 500, 500])
        #expect((0..<6).map { _ in high.next(jitter: 0.999) } == [99, 199, 399, 799, 999, 999])
    }
}

@Suite struct EpochChangeTests {
    @Test func aRingInAnotherEpochForcesResume() {
        let ring = ChannelRing(capacity: 10)
        var box = Outbox()
        box.subscribe(channel: "c", resume: nil, request: 1)
        _ = box.apply(channel: "c", request: 1, snapshot: HistorySnapshot(epoch: "old", seq: 4, frames: []))
        #expect(!box.mustResume(channel: "c", ring: ring))
        _ = ring.append(seq: 1, epoch: "new", frame: [1])
        #expect(box.mustResume(channel: "c", ring: ring))
    }
}

@Test func ringReserveKeepsEveryFrameAndTheirOrder() {
    let ring = ChannelRing(capacity: 3)
    for seq in UInt64(1)...5 { _ = ring.append(seq: seq, epoch: "e", frame: [UInt8(seq)]) }
    #expect(ring.firstSeq == 3 && ring.lookup(2) == .evicted)
    ring.reserve(6)
    for seq in UInt64(6)...8 { _ = ring.append(seq: seq, epoch: "e", frame: [UInt8(seq)]) }
    #expect(ring.firstSeq == 3)
    #expect((3...8).map { ring.lookup(UInt64($0)) } == (3...8).map { .frame([UInt8($0)]) })
    _ = ring.append(seq: 9, epoch: "e", frame: [9])
    #expect(ring.firstSeq == 4 && ring.lookup(3) == .evicted && ring.lookup(9) == .frame([9]))
    ring.reserve(2)
    #expect(ring.capacity == 6)
}

@Suite struct TokenTests {
    func hex(_ b: [UInt8]) -> String { b.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined() }

    func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    /// Every HMAC-SHA256 test case of RFC 4231 (section 4), through libcrypto.
    @Test func hmacMatchesEveryRFC4231Vector() {
        let large = [UInt8](repeating: 0xaa, count: 131)
        let cases: [(key: [UInt8], data: [UInt8], mac: String)] = [
            ([UInt8](repeating: 0x0b, count: 20), Array("Hi There".utf8),
             "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (Array("Jefe".utf8), Array("what do ya want for nothing?".utf8),
             "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            ([UInt8](repeating: 0xaa, count: 20), [UInt8](repeating: 0xdd, count: 50),
             "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
            (Array(1...25), [UInt8](repeating: 0xcd, count: 50),
             "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
            // Test case 5 publishes only the first 128 bits.
            ([UInt8](repeating: 0x0c, count: 20), Array("Test With Truncation".utf8), "a3b6167473100ee06e0c796c2955552b"),
            (large, Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8),
             "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
            (large, Array("This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".utf8),
             "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
        ]
        for c in cases {
            let mac = LibCrypto.hmacSHA256(c.key, c.data)
            #expect(mac.count == 32)
            #expect(hex(Array(mac.prefix(c.mac.count / 2))) == c.mac)
        }
        #expect(LibCrypto.hmacSHA256([], []) == bytes("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"))
    }

    @Test func signedTokensVerifyAndEveryAlterationIsRefused() {
        let v = TokenVerifier(secret: "0123456789abcdef0123", hmac: LibCrypto.hmacSHA256)
        let token = v.sign(TokenClaims(sub: "u1", exp: 2_000, channels: ["chat:*", "news"]))
        guard case let .success(claims) = v.verify(token, nowSeconds: 1_000) else { Issue.record("valid token refused"); return }
        #expect(claims == TokenClaims(sub: "u1", exp: 2_000, channels: ["chat:*", "news"]))
        #expect(claims.allows("chat:1") && claims.allows("news") && !claims.allows("chat") && !claims.allows("newsroom"))
        #expect(v.verify(token, nowSeconds: 2_000).reason == .expired)
        #expect(TokenVerifier(secret: "another secret!!!!", hmac: LibCrypto.hmacSHA256).verify(token, nowSeconds: 1_000).reason == .badSignature)
        var tampered = Array(token.utf8)
        tampered[tampered.count / 2] ^= 1
        if case .success = v.verify(String(decoding: tampered, as: UTF8.self), nowSeconds: 1_000) { Issue.record("tampered token accepted") }
        let parts = token.split(separator: ".")
        let none = Base64URL.encode(Array(#"{"alg":"none"}"#.utf8)) + "." + parts[1] + "."
        #expect(v.verify(none, nowSeconds: 1_000).reason == .badAlgorithm)
        #expect(v.verify("a.b", nowSeconds: 0).reason == .malformed)
    }

    @Test func nbfIsHonoured() {
        let v = TokenVerifier(secret: "0123456789abcdef0123", hmac: LibCrypto.hmacSHA256)
        let token = v.sign(TokenClaims(sub: "u", exp: 2_000, channels: ["*"]), notBefore: 1_500)
        #expect(v.verify(token, nowSeconds: 1_499).reason == .notYetValid)
        #expect(v.verify(token, nowSeconds: 1_500).reason == nil)
        #expect(v.verify(token, nowSeconds: 1_999).reason == nil)
    }

    /// One signature, one token string: padding, a sloppy last character or a stray byte in any
    /// part is refused, so a token cannot be re-spelt and still verify.
    @Test func everyOtherSpellingOfAValidTokenIsRefused() {
        let v = TokenVerifier(secret: "0123456789abcdef0123", hmac: LibCrypto.hmacSHA256)
        let token = v.sign(TokenClaims(sub: "u", exp: 2_000, channels: ["*"]))
        #expect(v.verify(token, nowSeconds: 1_000).reason == nil)
        let parts = token.split(separator: ".").map(String.init)
        // The signature is 32 bytes: 43 characters whose last carries 2 unused bits.
        #expect(parts[2].count == 43)
        let last = parts[2].last!
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        let index = alphabet.firstIndex(of: last)!
        for low in 1...3 {  // same 6-bit group's high bits, other unused low bits: decodes to the same bytes loosely
            let sloppy = parts[2].dropLast() + String(alphabet[(index & ~3) | low])
            #expect(v.verify(parts[0] + "." + parts[1] + "." + sloppy, nowSeconds: 1_000).reason == .malformed)
        }
        #expect(v.verify(token + "=", nowSeconds: 1_000).reason == .malformed)
        #expect(v.verify(parts[0] + "=." + parts[1] + "." + parts[2], nowSeconds: 1_000).reason == .malformed)
        #expect(v.verify(parts[0] + "." + parts[1] + "." + parts[2] + "A", nowSeconds: 1_000).reason == .badSignature)
        #expect(v.verify(parts[0] + "." + parts[1] + " ." + parts[2], nowSeconds: 1_000).reason == .malformed)
        #expect(v.verify(parts[0] + "." + parts[1] + ".", nowSeconds: 1_000).reason == .badSignature)
    }

    @Test func base64URLRoundTripsEveryLength() {
        for n in 0..<20 {
            let bytes = (0..<n).map { UInt8(($0 * 37 + 11) & 0xFF) }
            #expect(Base64URL.decode(Base64URL.encode(bytes)) == bytes)
        }
        #expect(Base64URL.decode("a+b") == nil)
        #expect(Base64URL.decode("QQ==") == nil)       // padding
        #expect(Base64URL.decode("QQ") == [0x41])
        #expect(Base64URL.decode("QR") == nil)         // low bits set in the last character
        #expect(Base64URL.decode("QUI") == [0x41, 0x42])
        #expect(Base64URL.decode("QUJ") == nil)
        #expect(Base64URL.decode("Q") == nil)          // a lone character
        #expect(Base64URL.decode("Q=Q") == nil)
        #expect(Base64URL.decode("") == [])
    }

    @Test func patternsAndTheAuthOp() {
        #expect(ChannelPattern.problem("chat:*") == nil && ChannelPattern.problem("*") == nil)
        #expect(ChannelPattern.problem("c*t") != nil && ChannelPattern.problem("bad name") != nil)
        #expect(ChannelPattern.matches("*", "anything"))
        #expect(ClientOpParser.parse(Array(#"{"op":"auth","token":"x.y.z"}"#.utf8)) == .success(.auth(token: "x.y.z")))
        if case .success = ClientOpParser.parse(Array(#"{"op":"auth"}"#.utf8)) { Issue.record("auth without token accepted") }
    }
}

@Suite struct ExpiryQueueTests {
    @Test func expiresEarliestFirstAndHonoursForgetAndRetrack() {
        var q = ExpiryQueue()
        #expect(q.next == nil && q.expired(nowSeconds: .max).isEmpty)
        q.track(1, expiresAt: 30)
        q.track(2, expiresAt: 10)
        q.track(3, expiresAt: 20)
        q.track(4, expiresAt: 10)
        #expect(q.next == 10)
        #expect(q.expired(nowSeconds: 9).isEmpty)
        #expect(q.expired(nowSeconds: 10) == [2, 4])
        q.forget(3)                    // closed before its token expired
        q.track(1, expiresAt: 100)     // a fresh token replaced the old one
        #expect(q.next == 100 && q.count == 1)
        #expect(q.expired(nowSeconds: 99).isEmpty)
        #expect(q.expired(nowSeconds: 100) == [1])
        #expect(q.next == nil && q.count == 0)
    }

    @Test func staysCorrectThroughManyRetracksAndCompactions() {
        var q = ExpiryQueue()
        var truth: [UInt64: UInt64] = [:]
        var x: UInt64 = 12345
        for step in 0..<5_000 {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            let id = (x >> 33) % 300, at = (x >> 20) % 10_000
            if step % 5 == 0 { q.forget(id); truth[id] = nil } else { q.track(id, expiresAt: at); truth[id] = at }
        }
        #expect(q.count == truth.count)
        #expect(q.next == truth.values.min())
        let cut: UInt64 = 5_000
        let want = truth.filter { $0.value <= cut }.sorted { ($0.value, $0.key) < ($1.value, $1.key) }.map(\.key)
        #expect(q.expired(nowSeconds: cut) == want)
        #expect(q.next == truth.values.filter { $0 > cut }.min())
    }
}

@Suite struct ClientAddressTests {
    @Test func parsesAndPrintsIPv4AndIPv6() {
        #expect(IPAddress("10.1.2.3")?.description == "10.1.2.3")
        #expect(IPAddress("::ffff:10.1.2.3") == IPAddress("10.1.2.3"))
        #expect(IPAddress("2001:DB8:0:0:0:0:0:7")?.description == "2001:db8::7")
        #expect(IPAddress("[::1]")?.description == "::1")
        #expect(IPAddress("::")?.description == "::")
        #expect(IPAddress("1:0:0:2:0:0:0:3")?.description == "1:0:0:2::3")
        for bad in ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.-4", "1::2::3", ":::", "12345::",
                    "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "g::1", "unknown", "1.2.3.4/8", " 1.2.3.4"] {
            #expect(IPAddress(bad) == nil, "\(bad)")
        }
    }

    @Test func rangesMatchByPrefix() {
        let ten = AddressRange("10.0.0.0/8")!
        #expect(ten.contains(IPAddress("10.255.0.1")!) && !ten.contains(IPAddress("11.0.0.1")!))
        #expect(AddressRange("192.168.1.10")!.contains(IPAddress("192.168.1.10")!))
        #expect(!AddressRange("192.168.1.10")!.contains(IPAddress("192.168.1.11")!))
        #expect(AddressRange("172.16.0.0/12")!.contains(IPAddress("172.31.255.255")!))
        #expect(!AddressRange("172.16.0.0/12")!.contains(IPAddress("172.32.0.0")!))
        #expect(AddressRange("fd00::/8")!.contains(IPAddress("fdab::1")!) && !AddressRange("fd00::/8")!.contains(IPAddress("fe80::1")!))
        #expect(!AddressRange("0.0.0.0/0")!.contains(IPAddress("::1")!))  // IPv4 ranges hold IPv4 only
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+8", "::/129", "x/8", "10.0.0.0/8/8"] { #expect(AddressRange(bad) == nil, "\(bad)") }
    }

    @Test func theClientIsTheRightmostUntrustedForwardedAddress() {
        let trusted = [AddressRange("10.0.0.0/8")!, AddressRange("127.0.0.1")!]
        func resolve(_ peer: String, _ xff: String?) -> String { ClientAddress.resolve(peer: peer, forwardedFor: xff, trusted: trusted) }
        #expect(resolve("10.0.0.5", "203.0.113.7") == "203.0.113.7")
        #expect(resolve("10.0.0.5", "1.1.1.1, 203.0.113.7, 10.0.0.9") == "203.0.113.7")  // a spoofed left entry is ignored
        #expect(resolve("10.0.0.5", " 2001:db8::1 ") == "2001:db8::1")
        #expect(resolve("198.51.100.1", "203.0.113.7") == "198.51.100.1")  // an untrusted peer cannot claim another address
        #expect(resolve("10.0.0.5", nil) == "10.0.0.5")
        #expect(resolve("10.0.0.5", "10.0.0.6, 127.0.0.1") == "10.0.0.5")  // only proxies named
        #expect(resolve("10.0.0.5", "203.0.113.7, garbage") == "10.0.0.5")  // malformed: the peer
        #expect(ClientAddress.resolve(peer: "10.0.0.5", forwardedFor: "203.0.113.7", trusted: []) == "10.0.0.5")
    }
}

extension Result where Failure == TokenError {
    /// Why the token was refused, or nil when it was accepted.
    var reason: TokenError.Reason? {
        if case let .failure(e) = self { return e.reason }
        return nil
    }
}

@Suite struct HTTPAccessTests {
    let secret = "0123456789abcdef0123"
    var verifier: TokenVerifier { TokenVerifier(secret: secret, hmac: LibCrypto.hmacSHA256) }

    func config(secret: String? = nil, apiKeys: [String] = [], anonymous: [String]? = nil) -> HeraldConfig {
        var c = HeraldConfig()
        c.tokenSecret = secret
        c.apiKeys = apiKeys
        c.anonymousChannels = anonymous
        return c
    }

    func history(_ channel: String, _ c: HeraldConfig, key: String? = nil, auth: String? = nil) -> HTTPAccess {
        HTTPAccess.history(.init(apiKey: key, authorization: auth), channel: channel, config: c,
                           verifier: c.tokenSecret == nil ? nil : verifier, nowSeconds: 1_000)
    }

    @Test func theAdminListenerNeedsItsOwnBearerToken() {
        let token = "admin-token-0123456789"
        func admin(_ auth: String?, key: String? = nil, token: String? = token) -> HTTPAccess {
            HTTPAccess.admin(.init(apiKey: key, authorization: auth), token: token)
        }
        #expect(admin("Bearer \(token)") == .allowed)
        #expect(admin("bearer  \(token) ") == .allowed)
        #expect(admin(nil) == .refused(status: 401, code: "unauthorized", message: "the admin listener needs Authorization: Bearer <admin token>"))
        // An API key is not the admin token, in either header.
        #expect(admin(nil, key: token) == .refused(status: 401, code: "unauthorized", message: "the admin listener needs Authorization: Bearer <admin token>"))
        #expect(admin("Basic \(token)") == .refused(status: 401, code: "unauthorized", message: "the admin listener needs Authorization: Bearer <admin token>"))
        #expect(admin("Bearer \(token)x") == .refused(status: 401, code: "unauthorized", message: "wrong admin token"))
        #expect(admin("Bearer \(token.dropLast())") == .refused(status: 401, code: "unauthorized", message: "wrong admin token"))
        #expect(admin(nil, token: nil) == .allowed)
    }

    @Test func listenAddressesParse() {
        #expect(HostPort.parse("127.0.0.1:9090")! == ("127.0.0.1", 9090))
        #expect(HostPort.parse("[::1]:9090")! == ("::1", 9090))
        #expect(HostPort.parse("redis-a:26379")! == ("redis-a", 26379))
        for bad in ["9090", ":9090", "host:", "host:0", "host:65536", "host:x", "a b:1", "[]:1"] {
            #expect(HostPort.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func historyFollowsTheRuleOfSubscribing() {
        let c = config(secret: secret, apiKeys: ["k1"], anonymous: ["public:*"])
        let covering = verifier.sign(TokenClaims(sub: "u", exp: 2_000, channels: ["chat:*"]))
        let expired = verifier.sign(TokenClaims(sub: "u", exp: 999, channels: ["chat:*"]))
        let forged = TokenVerifier(secret: "another secret 0123", hmac: LibCrypto.hmacSHA256)
            .sign(TokenClaims(sub: "u", exp: 2_000, channels: ["*"]))
        #expect(history("public:x", c) == .allowed)
        #expect(history("chat:1", c, auth: "Bearer \(covering)") == .allowed)
        #expect(history("chat:1", c, auth: "bearer \(covering)") == .allowed)
        #expect(history("admin", c, auth: "Bearer \(covering)") == .refused(status: 403, code: "forbidden", message: "your token does not cover this channel"))
        guard case .refused(401, "unauthorized", let why) = history("chat:1", c, auth: "Bearer \(expired)") else { Issue.record("expired"); return }
        #expect(why == "invalid token: token expired")
        guard case .refused(401, "unauthorized", _) = history("chat:1", c, auth: "Bearer \(forged)") else { Issue.record("forged"); return }
        #expect(history("chat:1", c, key: "k1") == .allowed)
        #expect(history("admin", c, auth: "Bearer k1") == .allowed)
        guard case .refused(401, "unauthorized", _) = history("chat:1", c, key: "k2") else { Issue.record("wrong key"); return }
        guard case .refused(401, "unauthorized", _) = history("chat:1", c) else { Issue.record("no credentials"); return }
        guard case .refused(401, "unauthorized", _) = history("chat:1", c, auth: "Basic dTpw") else { Issue.record("basic"); return }
    }

    @Test func withoutASecretEveryChannelIsReadable() {
        #expect(history("anything", config()) == .allowed)
    }

    @Test func publishingNeedsAKeyWheneverReadingIsProtected() {
        let publish = { (c: HeraldConfig, key: String?) in HTTPAccess.publish(.init(apiKey: key, authorization: nil), channel: "news", config: c) }
        #expect(publish(config(), nil) == .allowed)                       // the open demo
        guard case .refused(401, "unauthorized", _) = publish(config(secret: secret), nil) else { Issue.record("secret, no key"); return }
        guard case .refused(401, "unauthorized", _) = publish(config(anonymous: ["public:*"]), nil) else { Issue.record("narrow anonymous"); return }
        #expect(publish(config(secret: secret, apiKeys: ["k1"]), "k1") == .allowed)
        guard case .refused(401, _, _) = publish(config(apiKeys: ["k1"]), "k2") else { Issue.record("wrong key"); return }
        guard case .refused(401, _, _) = publish(config(apiKeys: ["k1"]), nil) else { Issue.record("missing key"); return }
        #expect(HTTPAccess.publish(.init(apiKey: nil, authorization: "Bearer k1"), channel: "news", config: config(apiKeys: ["k1"])) == .allowed)
    }
}

@Suite struct AdminOverviewTests {
    private func beat(_ json: String) -> JSONValue { try! JSON.parse(Array(json.utf8)) }

    private func overview(_ nodes: [AdminOverview.Node], now: UInt64 = 100_000) -> JSONValue {
        try! JSON.parse(AdminOverview.render(servedBy: "a", nowMillis: now, nodes: nodes, redis: .object([("role", .string("master"))]), rabbitmq: .null))
    }

    @Test func nodesAreUpUntilTheirBeatIsFiveSecondsOld() {
        let a = AdminOverview.Node(id: "a", lastSeenMillis: 99_000, beat: beat(#"{"id":"a","connections":3,"subscriptions":5,"sequencer":true,"messages_in_per_second":10,"deliveries_per_second":30.5}"#))
        let b = AdminOverview.Node(id: "b", lastSeenMillis: 95_000, beat: beat(#"{"id":"b","connections":2,"subscriptions":2,"sequencer":false,"messages_in_per_second":0,"deliveries_per_second":4}"#))
        let c = AdminOverview.Node(id: "c", lastSeenMillis: 94_999, beat: beat(#"{"id":"c","connections":7,"sequencer":true}"#))
        let gone = AdminOverview.Node(id: "d", lastSeenMillis: 99_900, beat: nil)
        let o = overview([c, gone, b, a])
        guard case let .array(nodes)? = o["nodes"] else { Issue.record("no nodes"); return }
        #expect(nodes.map { $0["id"]?.stringValue } == ["a", "b", "c", "d"])
        #expect(nodes.map { $0["state"]?.stringValue } == ["up", "up", "lost", "lost"])
        #expect(nodes[2]["age_ms"] == .number("5001"))
        #expect(nodes[0]["connections"] == .number("3"))
        // A lost node's stale sequencer flag does not name it the sequencer, and its counts drop out.
        #expect(o["sequencer"] == .string("a"))
        #expect(o["totals"]?["nodes_up"] == .number("2"))
        #expect(o["totals"]?["nodes_lost"] == .number("2"))
        #expect(o["totals"]?["connections"] == .number("5"))
        #expect(o["totals"]?["subscriptions"] == .number("7"))
        #expect(o["totals"]?["messages_in_per_second"] == .number("10"))
        #expect(o["totals"]?["deliveries_per_second"] == .number("34.5"))
        #expect(o["served_by"] == .string("a"))
        #expect(o["redis"]?["role"] == .string("master"))
    }

    @Test func noLiveSequencerIsNull() {
        let o = overview([AdminOverview.Node(id: "a", lastSeenMillis: 100_000, beat: beat(#"{"sequencer":false}"#))])
        #expect(o["sequencer"] == .null)
    }

    @Test func deadLettersOfEveryNodeAreListedNewestFirstWithTheirNode() {
        let a = AdminOverview.Node(id: "a", lastSeenMillis: 100_000, beat: beat(#"{"dead_letters":[{"at_ms":10,"reason":"bad_json"},{"at_ms":30,"reason":"bad_channel"},{"at_ms":30,"reason":"store_failed"}]}"#))
        let b = AdminOverview.Node(id: "b", lastSeenMillis: 100_000, beat: beat(#"{"dead_letters":[{"at_ms":20,"reason":"too_large"}]}"#))
        guard case let .array(dead)? = overview([a, b])["dead_letters"] else { Issue.record("no dead letters"); return }
        #expect(dead.map { $0["reason"]?.stringValue } == ["store_failed", "bad_channel", "too_large", "bad_json"])
        #expect(dead.map { $0["node"]?.stringValue } == ["a", "a", "b", "a"])
    }

    @Test func busiestChannelsSumEveryNodesShare() {
        let a = AdminOverview.Node(id: "a", lastSeenMillis: 100_000, beat: beat(#"{"channels":[{"channel":"news","per_second":2},{"channel":"chat","per_second":5}]}"#))
        let b = AdminOverview.Node(id: "b", lastSeenMillis: 100_000, beat: beat(#"{"channels":[{"channel":"news","per_second":4}]}"#))
        guard case let .array(channels)? = overview([a, b])["channels"] else { Issue.record("no channels"); return }
        #expect(channels.map { $0["channel"]?.stringValue } == ["news", "chat"])
        #expect(channels.map { $0["per_second"] } == [.number("6"), .number("5")])
    }

    @Test func ratesAndTheBusiestOfOneNode() {
        #expect(AdminOverview.perSecond(150, 100, overMillis: 2000) == 25)
        #expect(AdminOverview.perSecond(100, 150, overMillis: 2000) == 0)
        #expect(AdminOverview.perSecond(1, 0, overMillis: 0) == 0)
        #expect(AdminOverview.perSecond(1, 0, overMillis: 3000) == 0.3)
        let top = AdminOverview.busiest(["b": 10, "a": 10, "c": 30, "idle": 0], overMillis: 1000, top: 2)
        #expect(top.map(\.channel) == ["c", "a"])
        #expect(top.map(\.perSecond) == [30, 10])
        #expect(AdminOverview.number(2.25) == .number("2.3") || AdminOverview.number(2.25) == .number("2.2"))
        #expect(AdminOverview.number(7) == .number("7"))
    }

    @Test func redisInfoIsParsedBySection() {
        let info = AdminOverview.info("# Server\r\nredis_version:7.0.15\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:2\r\nodd line\r\n")
        #expect(info == ["redis_version": "7.0.15", "role": "master", "connected_slaves": "2"])
    }
}
