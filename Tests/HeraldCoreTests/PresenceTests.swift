import Testing
@testable import HeraldCore

/// Presence rules without a socket: the member encoding, the change format the sequencer reads,
/// the announcer's merging, syncs and reaps, and the resume plan.

private func member(_ client: String, user: String? = "u") -> [UInt8] {
    PresenceMember(client: client, user: user, node: "n1").json
}

private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// An announcer that already holds its lease.
private func leasedAnnouncer(tick: UInt64 = 100_000) -> PresenceAnnouncer {
    var a = PresenceAnnouncer(settings: .init(tickMicros: tick, leaseMicros: 5_000_000, heartbeatMicros: 1_000_000), instance: "i1")
    #expect(a.due(nowMicros: 0) == [.heartbeat])
    a.heartbeat(lapsed: true)
    return a
}

private func published(_ due: [PresenceAnnouncer.Due]) -> [PresenceAnnouncer.Outgoing] {
    due.flatMap { d -> [PresenceAnnouncer.Outgoing] in
        if case let .publish(out) = d { return out }
        return []
    }
}

@Suite struct PresenceMemberTests {
    @Test func aMemberIsCompactJSONWithNullForAnAnonymousUser() throws {
        #expect(text(PresenceMember(client: "i1.7", user: nil, node: "n1").json) == #"{"client":"i1.7","user":null,"node":"n1"}"#)
        let withInfo = PresenceMember(client: "i1.7", user: "ann", node: "n\"1", info: Array(#"{"name":"Ann"}"#.utf8))
        #expect(text(withInfo.json) == #"{"client":"i1.7","user":"ann","node":"n\"1","info":{"name":"Ann"}}"#)
        #expect(try JSON.parse(withInfo.json)["info"]?["name"]?.stringValue == "Ann")
        #expect(PresenceMember.instance(ofClient: "i1.7") == "i1")
        #expect(PresenceMember.clientID(instance: "ab12", connection: 9) == "ab12.9")
    }

    @Test func aPresenceStreamCannotBeNamedByAClient() {
        let stream = PresenceStream.name(of: "room:1")
        #expect(stream == "~p:room:1")
        #expect(PresenceStream.channel(of: stream) == "room:1")
        #expect(PresenceStream.channel(of: "room:1") == nil)
        #expect(!ChannelName.isValid(stream))
    }
}

@Suite struct PresenceChangeTests {
    @Test func aChangeSurvivesItsTripThroughRabbitMQ() throws {
        let change = PresenceChange(sync: true, joins: [("i1.1", member("i1.1")), ("i1.2", member("i1.2", user: nil))],
                                    leaves: ["i1.3"], reaps: ["i9"])
        let body = change.encode()
        #expect(text(body).hasPrefix("=\n-i1.3\n+i1.1\t{"))
        #expect(try PresenceChange.decode(body).get() == change)
    }

    @Test func aMalformedChangeIsRefusedWithItsReason() {
        func reason(_ body: String) -> String? {
            if case let .failure(e) = PresenceChange.decode(Array(body.utf8)) { return "\(e.code.rawValue): \(e.message)" }
            return nil
        }
        #expect(reason("") == "bad_presence: an empty presence change")
        #expect(reason("-i1.1\n=\n") == #"bad_presence: "=" (sync) may only be the first line, alone"#)
        #expect(reason("-nodot\n") == "bad_presence: line 1: bad client id")
        #expect(reason("-i1.1\n+i1.2 {}\n") == "bad_presence: line 2: a join is +client TAB member")
        #expect(reason("+i1.2\t[1]\n") == "bad_presence: line 1: the member is not a JSON object")
        #expect(reason("!bad instance\n") == "bad_presence: line 1: bad node instance")
        #expect(reason("?x\n") == "bad_presence: line 1: unknown kind")
        #expect(reason("-i1.1\n") == nil)
    }
}

@Suite struct PresenceAnnouncerTests {
    @Test func nothingIsAnnouncedBeforeTheLeaseIsHeld() {
        var a = PresenceAnnouncer(settings: .init(), instance: "i1")
        a.joined(channel: "room", client: "i1.1", member: member("i1.1"))
        #expect(a.due(nowMicros: 0) == [.heartbeat])
        #expect(a.due(nowMicros: 200_000) == [])   // no lease yet: the join waits
        a.heartbeat(lapsed: true)                  // the first lease: nothing was announced to lose
        let out = published(a.due(nowMicros: 300_000))
        #expect(out.map(\.change) == [PresenceChange(joins: [("i1.1", member("i1.1"))])])
    }

    @Test func aThousandJoinsInOneTickAreOneChange() {
        var a = leasedAnnouncer()
        for i in 1...1000 { a.joined(channel: "room", client: "i1.\(i)", member: member("i1.\(i)")) }
        let out = published(a.due(nowMicros: 10))
        #expect(out.count == 1)
        #expect(out[0].change.joins.count == 1000)
        #expect(out[0].change.leaves.isEmpty && !out[0].change.sync)
        #expect(published(a.due(nowMicros: 20)).isEmpty)   // nothing new
    }

    @Test func changesWithinATickWaitForTheNextOneAndMerge() {
        var a = leasedAnnouncer(tick: 100_000)
        a.joined(channel: "room", client: "i1.1", member: member("i1.1"))
        #expect(published(a.due(nowMicros: 10)).count == 1)
        a.joined(channel: "room", client: "i1.2", member: member("i1.2"))
        a.left(channel: "room", client: "i1.1")
        #expect(published(a.due(nowMicros: 50_000)).isEmpty)   // inside the tick
        let out = published(a.due(nowMicros: 100_010))
        #expect(out.map(\.change) == [PresenceChange(joins: [("i1.2", member("i1.2"))], leaves: ["i1.1"])])
    }

    @Test func aJoinAndLeaveInOneTickCostNothing() {
        var a = leasedAnnouncer()
        a.joined(channel: "room", client: "i1.1", member: member("i1.1"))
        a.left(channel: "room", client: "i1.1")
        a.left(channel: "room", client: "i1.99")   // never a member: ignored
        #expect(published(a.due(nowMicros: 10)).isEmpty)
        #expect(a.memberCount == 0)
    }

    @Test func aMemberWhoseTokenChangedLeavesAndJoinsAgain() {
        var a = leasedAnnouncer()
        a.joined(channel: "room", client: "i1.1", member: member("i1.1", user: "old"))
        _ = a.due(nowMicros: 10)
        a.joined(channel: "room", client: "i1.1", member: member("i1.1", user: "new"))
        let out = published(a.due(nowMicros: 200_000))
        #expect(out.map(\.change) == [PresenceChange(joins: [("i1.1", member("i1.1", user: "new"))], leaves: ["i1.1"])])
    }

    @Test func aChangeThatWasNotConfirmedIsFollowedByASyncOfItsChannel() {
        var a = leasedAnnouncer()
        a.joined(channel: "a", client: "i1.1", member: member("i1.1"))
        a.joined(channel: "b", client: "i1.2", member: member("i1.2"))
        let first = published(a.due(nowMicros: 10))
        #expect(first.map(\.channel) == ["a", "b"])
        // The member of "a" left before we knew whether its join arrived.
        a.left(channel: "a", client: "i1.1")
        a.unconfirmed()
        let next = published(a.due(nowMicros: 200_000))
        #expect(next.map(\.channel) == ["a", "b"])
        #expect(next.map(\.change) == [PresenceChange(sync: true), PresenceChange(sync: true, joins: [("i1.2", member("i1.2"))])])
    }

    @Test func confirmedChangesAreNotSyncedAfterALaterLoss() {
        var a = leasedAnnouncer()
        a.joined(channel: "a", client: "i1.1", member: member("i1.1"))
        let first = published(a.due(nowMicros: 10))
        a.confirmed(through: first[0].token)
        a.joined(channel: "b", client: "i1.2", member: member("i1.2"))
        _ = a.due(nowMicros: 200_000)
        a.unconfirmed()
        #expect(published(a.due(nowMicros: 400_000)).map(\.channel) == ["b"])
    }

    @Test func aLapsedLeaseSyncsEveryChannel() {
        var a = leasedAnnouncer()
        a.joined(channel: "a", client: "i1.1", member: member("i1.1"))
        a.joined(channel: "b", client: "i1.2", member: member("i1.2"))
        let first = published(a.due(nowMicros: 10))
        a.confirmed(through: first.last!.token)
        #expect(a.due(nowMicros: 1_000_000) == [.heartbeat])
        a.heartbeat(lapsed: false)                      // renewed in time: nothing to do
        #expect(published(a.due(nowMicros: 1_100_000)).isEmpty)
        // This thread stalled past its lease (Redis answered, but the lease had run out).
        a.heartbeat(lapsed: true)
        #expect(published(a.due(nowMicros: 1_200_000)).map(\.change) == [
            PresenceChange(sync: true, joins: [("i1.1", member("i1.1"))]),
            PresenceChange(sync: true, joins: [("i1.2", member("i1.2"))]),
        ])
        #expect(a.due(nowMicros: 2_000_000) == [.heartbeat])
        a.heartbeatFailed()                              // Redis unreachable: changes wait
        a.joined(channel: "a", client: "i1.3", member: member("i1.3"))
        #expect(a.due(nowMicros: 2_500_000).isEmpty)
        #expect(a.due(nowMicros: 3_000_000) == [.heartbeat])
        a.heartbeat(lapsed: true)                        // peers may have reaped us meanwhile
        let out = published(a.due(nowMicros: 3_000_001))
        #expect(out.map(\.change) == [
            PresenceChange(sync: true, joins: [("i1.1", member("i1.1")), ("i1.3", member("i1.3"))]),
            PresenceChange(sync: true, joins: [("i1.2", member("i1.2"))]),
        ])
    }

    @Test func stoppingRemovesEveryMemberThisInstanceAnnounced() {
        var a = leasedAnnouncer()
        a.joined(channel: "a", client: "i1.1", member: member("i1.1"))
        _ = a.due(nowMicros: 10)
        a.joined(channel: "b", client: "i1.2", member: member("i1.2"))   // never announced
        #expect(a.farewell().map(\.change) == [PresenceChange(sync: true)])
        #expect(a.memberCount == 0)
    }

    @Test func expiredPeersAreReapedOncePerLeaseAndNeverThisInstance() {
        var a = leasedAnnouncer()
        let expired = [(instance: "i9", channels: ["b", "a"]), (instance: "i1", channels: ["a"])]
        let first = a.reaps(expired: expired, nowMicros: 1_000_000)
        #expect(first.map(\.channel) == ["a", "b"])
        #expect(first.map(\.change) == [PresenceChange(reaps: ["i9"]), PresenceChange(reaps: ["i9"])])
        #expect(a.reaps(expired: expired, nowMicros: 2_000_000).isEmpty)          // asked within the lease
        #expect(a.reaps(expired: expired, nowMicros: 6_000_000).count == 2)       // still expired a lease later
        #expect(a.reaps(expired: [], nowMicros: 7_000_000).isEmpty)               // reaped: forgotten
        #expect(a.reaps(expired: expired, nowMicros: 7_500_000).count == 2)       // expired again: asked at once
    }
}

@Suite struct PresencePlannerTests {
    private func snapshot(seq: UInt64, retained: ClosedRange<UInt64>?, epoch: String = "e1") -> PresenceSnapshot {
        let frames = retained.map { r in r.map { Array(#"{"type":"join","presence_seq":\#($0)}"#.utf8) } } ?? []
        return PresenceSnapshot(stream: HistorySnapshot(epoch: epoch, seq: seq, frames: frames),
                                members: [member("i1.1"), member("i2.4")])
    }

    @Test func aFreshSubscriberGetsTheWholeListAndNoReplay() {
        let plan = PresencePlanner.plan(channel: "room", client: "i1.1", snapshot: snapshot(seq: 5, retained: 1...5), resume: nil)
        #expect(text(plan.subscribed) == #"{"type":"presence","channel":"room","client":"i1.1","presence_epoch":"e1","presence_seq":5,"replay":0,"members":["#
                + text(member("i1.1")) + "," + text(member("i2.4")) + "]}")
        #expect(plan.replay.isEmpty)
        #expect(plan.seq == 5)
    }

    @Test func aResumeThatLostNothingReplaysTheChangesWithoutAList() {
        let plan = PresencePlanner.plan(channel: "room", client: "i1.1", snapshot: snapshot(seq: 9, retained: 3...9),
                                        resume: ResumePosition(since: 6, epoch: "e1"))
        #expect(text(plan.subscribed) == #"{"type":"presence","channel":"room","client":"i1.1","presence_epoch":"e1","presence_seq":9,"replay":3,"recovered":true,"missed":0}"#)
        #expect(plan.replay.map(text) == (7...9).map { #"{"type":"join","presence_seq":\#($0)}"# })
    }

    @Test func aResumePastTheRetainedChangesGetsTheListAndTheGap() {
        let plan = PresencePlanner.plan(channel: "room", client: "i1.1", snapshot: snapshot(seq: 9, retained: 6...9),
                                        resume: ResumePosition(since: 2, epoch: "e1"))
        #expect(text(plan.subscribed).contains(#""replay":0,"recovered":false,"missed":3,"members":["#))
        #expect(plan.replay.isEmpty)
    }

    @Test func aResumeInAnotherEpochGetsTheListWithAnUnknownGap() {
        let plan = PresencePlanner.plan(channel: "room", client: "i1.1", snapshot: snapshot(seq: 2, retained: 1...2, epoch: "e2"),
                                        resume: ResumePosition(since: 40, epoch: "e1"))
        #expect(text(plan.subscribed).contains(#""presence_epoch":"e2","presence_seq":2,"replay":0,"recovered":false,"missed":null,"members":["#))
    }

    @Test func aResumeAtTheNewestChangeReplaysNothingAndSendsNoList() {
        let plan = PresencePlanner.plan(channel: "room", client: "i1.1", snapshot: snapshot(seq: 9, retained: 3...9),
                                        resume: ResumePosition(since: 9, epoch: "e1"))
        #expect(!text(plan.subscribed).contains("members"))
        #expect(plan.replay.isEmpty)
    }
}

@Suite struct PresenceSessionTests {
    private func presencePolicy() -> ClientSession.Policy {
        var p = policy(anonymous: ["*"])
        p.presencePatterns = ["room:*"]
        return p
    }

    @Test func presenceFieldsAreParsedAndCheckedLikeSince() throws {
        func parse(_ json: String) -> Result<ClientOp, ClientError> { ClientOpParser.parse(Array(json.utf8)) }
        #expect(try parse(#"{"op":"subscribe","channel":"room:1","presence":true,"presence_since":4,"presence_epoch":"p1"}"#).get()
                == .subscribeWithPresence(channel: "room:1", resume: nil, presenceResume: ResumePosition(since: 4, epoch: "p1")))
        #expect(try parse(#"{"op":"subscribe","channel":"room:1","presence":false}"#).get() == .subscribe(channel: "room:1", resume: nil))
        #expect(try parse(#"{"op":"presence","channel":"room:1"}"#).get() == .presence(channel: "room:1"))
        #expect(parse(#"{"op":"subscribe","channel":"room:1","presence":1}"#)
                == .failure(ClientError(.badRequest, #""presence" must be true or false"#, op: "subscribe", channel: "room:1")))
        #expect(parse(#"{"op":"subscribe","channel":"room:1","presence":true,"presence_since":-1}"#)
                == .failure(ClientError(.badRequest, #""presence_since" must be a non-negative integer"#, op: "subscribe", channel: "room:1")))
    }

    @Test func presenceInTheURLSubscribesEveryChannelOfItWithItsMembers() {
        #expect(ConnectRequest.parse(query: "channel=room:1&presence=true").presence)
        #expect(ConnectRequest.parse(query: "channel=room:1&presence=1").presence)
        #expect(!ConnectRequest.parse(query: "channel=room:1&presence=no").presence)
        var s = ClientSession(policy: presencePolicy())
        let actions = s.handle(.opened(query: [("channel", "room:1"), ("channel", "news"), ("presence", "true")]), monotonicMillis: 0, wallSeconds: 0)
        #expect(actions.filter { if case .subscribe = $0 { true } else { false } }
                == [.subscribe(channel: "room:1", resume: nil), .subscribe(channel: "~p:room:1", resume: nil), .subscribe(channel: "news", resume: nil)])
        #expect(drain(&s).contains { $0.contains(#""code":"presence_unavailable""#) && $0.contains(#""channel":"news""#) })
        var plain = ClientSession(policy: presencePolicy())
        let without = plain.handle(.opened(query: [("channel", "room:1")]), monotonicMillis: 0, wallSeconds: 0)
        #expect(without.filter { if case .subscribe = $0 { true } else { false } } == [.subscribe(channel: "room:1", resume: nil)])
    }

    @Test func aPresenceSubscribeAlsoSubscribesTheStreamAndUnsubscribeEndsBoth() {
        var s = ClientSession(policy: presencePolicy())
        let actions = s.handle(op(#"{"op":"subscribe","channel":"room:1","presence":true,"presence_since":3}"#), monotonicMillis: 0, wallSeconds: 0)
        #expect(actions == [.tally(.subscribed), .subscribe(channel: "room:1", resume: nil),
                            .subscribe(channel: "~p:room:1", resume: ResumePosition(since: 3, epoch: nil))])
        s.outbox.subscribe(channel: "room:1", resume: nil, request: 1)
        s.outbox.subscribe(channel: "~p:room:1", resume: nil, request: 2)
        #expect(s.handle(op(#"{"op":"presence","channel":"room:1"}"#), monotonicMillis: 0, wallSeconds: 0)
                == [.subscribe(channel: "~p:room:1", resume: nil)])
        #expect(s.handle(op(#"{"op":"unsubscribe","channel":"room:1"}"#), monotonicMillis: 0, wallSeconds: 0)
                == [.unsubscribed(channel: "room:1"), .unsubscribed(channel: "~p:room:1"), .sendSoon])
    }

    @Test func presenceWhereThereIsNoneIsAnErrorButTheSubscriptionStands() {
        var s = ClientSession(policy: presencePolicy())
        let actions = s.handle(op(#"{"op":"subscribe","channel":"lobby","presence":true}"#), monotonicMillis: 0, wallSeconds: 0)
        #expect(actions == [.tally(.subscribed), .subscribe(channel: "lobby", resume: nil), .tally(.clientError), .sendSoon])
        #expect(drain(&s) == [#"{"type":"error","code":"presence_unavailable","message":"this channel has no presence (--presence-channels)","op":"subscribe","channel":"lobby"}"#])
        _ = s.handle(op(#"{"op":"presence","channel":"room:1"}"#), monotonicMillis: 0, wallSeconds: 0)
        #expect(drain(&s).first?.contains(#"subscribe to this channel with \"presence\": true first"#) == true)
    }

    @Test func presenceStreamsDoNotCountAgainstTheSubscriptionLimit() {
        var p = presencePolicy()
        p.maxSubscriptions = 1
        var s = ClientSession(policy: p)
        _ = s.handle(op(#"{"op":"subscribe","channel":"room:1","presence":true}"#), monotonicMillis: 0, wallSeconds: 0)
        s.outbox.subscribe(channel: "room:1", resume: nil, request: 1)
        s.outbox.subscribe(channel: "~p:room:1", resume: nil, request: 2)
        // Re-subscribing with presence again is a replacement, not a third subscription.
        #expect(s.handle(op(#"{"op":"subscribe","channel":"room:1","presence":true}"#), monotonicMillis: 0, wallSeconds: 0).first
                == .subscribe(channel: "room:1", resume: nil))
    }

    @Test func aTokensInfoClaimTravelsCompact() throws {
        let token = signer.sign(TokenClaims(sub: "ann", exp: 2_000, channels: ["*"], info: Array(#"{"name":"Ann"}"#.utf8)))
        let claims = try signer.verify(token, nowSeconds: 1_000).get()
        #expect(claims.info.map(text) == #"{"name":"Ann"}"#)
        let bad = signer.sign(TokenClaims(sub: "ann", exp: 2_000, channels: ["*"], info: Array("[1]".utf8)))
        #expect(signer.verify(bad, nowSeconds: 1_000) == .failure(TokenError(.badClaims, "info must be a JSON object")))
    }
}

@Suite struct PresenceFanOutTests {
    private func fanOut() -> FanOut {
        var p = policy(anonymous: ["*"])
        p.presencePatterns = ["room:*"]
        var f = FanOut(settings: FanOut.Settings(session: p, clientBacklog: 100, maxRingCapacity: 200, coalesceMicros: 0, keepAliveMicros: 60_000_000))
        f.settings.instance = "i1"
        f.settings.node = "n1"
        return f
    }
    private let now = FanOut.Now(monotonicMicros: 1_000_000, wallMillis: 1_000_000)

    private func presenceEvents(_ actions: [FanOut.Action]) -> [FanOut.PresenceEvent] {
        actions.compactMap { if case let .presence(e) = $0 { return e } else { return nil } }
    }

    @Test func subscribersOfPresenceChannelsJoinOnceAndLeaveWhenTheyGo() {
        var f = fanOut()
        _ = f.handle(.opened(7, query: []), now: now)
        let joined = f.handle(.received(7, Array(#"{"op":"subscribe","channel":"room:1"}"#.utf8), binary: false), now: now)
        #expect(presenceEvents(joined) == [.joined(channel: "room:1", client: "i1.7", member: Array(#"{"client":"i1.7","user":null,"node":"n1"}"#.utf8))])
        // Asking for the list again, or re-subscribing, is not a second join.
        let again = f.handle(.received(7, Array(#"{"op":"subscribe","channel":"room:1","presence":true}"#.utf8), binary: false), now: now)
        #expect(presenceEvents(again).isEmpty)
        _ = f.handle(.received(7, Array(#"{"op":"subscribe","channel":"other"}"#.utf8), binary: false), now: now)
        #expect(presenceEvents(f.handle(.closed(7), now: now)) == [.left(channel: "room:1", client: "i1.7")])
    }

    @Test func thePresenceStreamsReadIsAnsweredWithTheList() {
        var f = fanOut()
        _ = f.handle(.opened(7, query: []), now: now)
        let actions = f.handle(.received(7, Array(#"{"op":"subscribe","channel":"room:1","presence":true}"#.utf8), binary: false), now: now)
        let reads = actions.compactMap { if case let .readHistory(c, r) = $0 { return (c, r) } else { return nil } }
        #expect(reads.map(\.0) == ["room:1", "~p:room:1"])
        let list = HistorySnapshot(epoch: "p1", seq: 2, frames: [], members: [member("i1.7"), member("i2.1")])
        _ = f.handle(.history(channel: "~p:room:1", requests: [reads[1].1], snapshot: list), now: now)
        guard case let .frames(frames, _, _) = f.writeNext(7) else { Issue.record("nothing to write"); return }
        #expect(frames.map(text) == [#"{"type":"presence","channel":"room:1","client":"i1.7","presence_epoch":"p1","presence_seq":2,"replay":0,"members":["#
                                     + text(member("i1.7")) + "," + text(member("i2.1")) + "]}"])
        // Then the stream's live changes, after the list.
        let change = Array(#"{"type":"join","channel":"room:1","presence_epoch":"p1","presence_seq":3,"members":[]}"#.utf8)
        _ = f.handle(.live([SequencedMessage(channel: "~p:room:1", epoch: "p1", seq: 3, frame: change)]), now: now)
        guard case let .frames(live, _, _) = f.writeNext(7) else { Issue.record("no live change"); return }
        #expect(live == [change])
    }
}
