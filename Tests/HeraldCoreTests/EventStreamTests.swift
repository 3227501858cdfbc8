import Testing
@testable import HeraldCore

/// Server-Sent Events without a socket: the ids that carry every channel's position, their
/// parsing (hostile input included), the events frames become, and Last-Event-ID at connect.

private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }
private func frame(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite struct EventStreamTests {
    @Test func idsRoundTripWithColonsAndAtsInChannelNames() {
        let id = EventStreamID.encode([("room:1", 44, "e1"), ("a@b", 7, "f2")])
        #expect(id == "room:1:44@e1,a@b:7@f2")
        #expect(EventStreamID.parse(id) == ["room:1": ResumePosition(since: 44, epoch: "e1"), "a@b": ResumePosition(since: 7, epoch: "f2")])
    }

    @Test func badItemsOfAnIdAreSkipped() {
        #expect(EventStreamID.parse("") == [:])
        #expect(EventStreamID.parse("a:1@e,b:x@e,c:2@,:3@e,d4@e,bad channel:5@e,e:-1@e,f:6@e!,g:7@e") ==
                ["a": ResumePosition(since: 1, epoch: "e"), "g": ResumePosition(since: 7, epoch: "e")])
        #expect(EventStreamID.parse(String(repeating: "a:1@e,", count: 5_000)).count == 1)
    }

    @Test func framesBecomeNamedEventsAndMessagesCarryEveryPosition() {
        var e = EventStreamEncoder(resume: [("b", ResumePosition(since: 9, epoch: "eb"))])
        var out: [UInt8] = []
        e.encode([frame(#"{"type":"subscribed","channel":"a","epoch":"ea","seq":2,"replay":2}"#),
                  frame(#"{"type":"message","channel":"a","seq":1,"id":"x","time":1,"data":{"seq":99}}"#),
                  frame(#"{"type":"error","code":"bad_channel","message":"m"}"#)], into: &out)
        #expect(text(out) == """
            event: subscribed
            data: {"type":"subscribed","channel":"a","epoch":"ea","seq":2,"replay":2}

            event: message
            id: b:9@eb,a:1@ea
            data: {"type":"message","channel":"a","seq":1,"id":"x","time":1,"data":{"seq":99}}

            event: error
            data: {"type":"error","code":"bad_channel","message":"m"}


            """)
        #expect(e.id == "b:9@eb,a:1@ea")
    }

    @Test func aNewEpochOrAnUnsubscribeDropsTheChannelsPosition() {
        var e = EventStreamEncoder(resume: [("a", ResumePosition(since: 5, epoch: "old")), ("b", ResumePosition(since: 1, epoch: "eb"))])
        var out: [UInt8] = []
        e.encode([frame(#"{"type":"subscribed","channel":"a","epoch":"new","seq":0,"replay":0,"recovered":false,"missed":null}"#)], into: &out)
        #expect(e.id == "b:1@eb")
        e.encode([frame(#"{"type":"message","channel":"a","seq":1,"id":"x","time":1,"data":1}"#),
                  frame(#"{"type":"unsubscribed","channel":"b"}"#)], into: &out)
        #expect(e.id == "a:1@new")
    }

    @Test func theStreamsFixedPieces() {
        #expect(text(EventStreamEncoder.preamble(retryMillis: 1000)) == "retry: 1000\n\n")
        #expect(text(EventStreamEncoder.close(code: 4002, reason: "token \"expired\"")) ==
                "event: close\ndata: {\"type\":\"close\",\"code\":4002,\"reason\":\"token \\\"expired\\\"\"}\n\n")
        #expect(text(EventStreamEncoder.heartbeat) == ":\n\n")
    }

    @Test func lastEventIDResumesEachChannelAndWinsOverSince() {
        let r = ConnectRequest.parse(pairs: [("channel", "a"), ("channel", "b"), ("channel", "c"), ("last-event-id", "a:4@e1,b:2@e2,z:1@e3")])
        #expect(r.errors.isEmpty)
        #expect(r.subscriptions.map(\.channel) == ["a", "b", "c"])
        #expect(r.subscriptions.map(\.resume) == [ResumePosition(since: 4, epoch: "e1"), ResumePosition(since: 2, epoch: "e2"), nil])
        let one = ConnectRequest.parse(pairs: [("channel", "a"), ("since", "1"), ("epoch", "e0"), ("last_event_id", "a:4@e1")])
        #expect(one.subscriptions.map(\.resume) == [ResumePosition(since: 4, epoch: "e1")])
        // A channel the id does not name resumes from the URL's position: it had no message since.
        let kept = ConnectRequest.parse(pairs: [("channel", "a"), ("since", "3"), ("epoch", "e0"), ("last-event-id", "other:1@x")])
        #expect(kept.subscriptions.map(\.resume) == [ResumePosition(since: 3, epoch: "e0")])
        #expect(kept.resumePositions.map(\.channel) == ["a"])
    }
}
