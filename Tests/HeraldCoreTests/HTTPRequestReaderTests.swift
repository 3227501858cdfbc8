import Testing
@testable import HeraldCore

/// Feeds `chunks` one after another, answering each request at once: the events, in order.
func readAll(_ chunks: [[UInt8]], limits: HTTPLimits = HTTPLimits()) -> [HTTPReadEvent] {
    var reader = HTTPRequestReader(limits: limits)
    var events: [HTTPReadEvent] = []
    for chunk in chunks {
        reader.append(chunk)
        while let event = reader.next() {
            events.append(event)
            reader.answered()
        }
    }
    return events
}

func post(_ body: String, channel: String = "news", extra: String = "") -> [UInt8] {
    Array("POST /api/publish/\(channel) HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\(extra)\r\n\(body)".utf8)
}

func bodies(_ events: [HTTPReadEvent]) -> [String] {
    events.compactMap { if case let .request(_, body) = $0 { String(decoding: body, as: UTF8.self) } else { nil } }
}

func refusal(_ events: [HTTPReadEvent]) -> HTTPRefusal? {
    events.compactMap { if case let .refused(r) = $0 { r } else { nil } }.first
}

@Suite struct HTTPRequestReaderTests {
    @Test func pipelinedRequestsComeOutOnceEachWithTheirOwnBodies() {
        let stream = post("first") + post("") + post("third!") + Array("GET /livez HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        let events = readAll([stream])
        #expect(bodies(events) == ["first", "", "third!", ""])
        #expect(refusal(events) == nil)
    }

    @Test func everySplitOfAPairReadsTheSame() {
        let pair = post("first") + post("second", extra: "Idempotency-Key: k2\r\n")
        let whole = readAll([pair])
        #expect(bodies(whole) == ["first", "second"])
        for cut in 1..<pair.count {
            #expect(readAll([Array(pair[..<cut]), Array(pair[cut...])]) == whole, "split at \(cut)")
        }
        #expect(readAll(pair.map { [$0] }) == whole, "one byte at a time")
    }

    @Test func nothingIsReadWhileAnAnswerIsAwaited() {
        var reader = HTTPRequestReader()
        reader.append(post("a") + post("b"))
        guard case .request = reader.next() else { Issue.record("no first request"); return }
        #expect(reader.next() == nil)
        #expect(reader.next() == nil, "the same request is never handed out twice")
        reader.answered()
        guard case let .request(_, body) = reader.next() else { Issue.record("no second request"); return }
        #expect(body == Array("b".utf8))
    }

    @Test(arguments: [
        ("Content-Length: -5\r\n", 400, "bad_framing"),
        ("Content-Length: 5x\r\n", 400, "bad_framing"),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", 400, "bad_framing"),
        ("Content-Length: 5, 6\r\n", 400, "bad_framing"),
        ("Content-Length: 99999999999999999999999\r\n", 413, "too_large"),
        ("Content-Length: 65537\r\n", 413, "too_large"),
        ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400, "bad_framing"),
        ("Transfer-Encoding: gzip\r\n", 501, "not_implemented"),
        ("Transfer-Encoding: gzip, chunked\r\n", 501, "not_implemented"),
        ("", 411, "length_required"),
        ("Content-Length : 5\r\n", 400, "bad_request"),
        ("Content-Length: 5\r\n folded\r\n", 400, "bad_request"),
        ("Host: y\r\nContent-Length: 5\r\n", 400, "bad_request"),
        ("X-Nul: a\u{0}b\r\nContent-Length: 5\r\n", 400, "bad_request"),
    ])
    func untrustedFramingIsRefused(headers: String, status: Int, code: String) {
        let raw = Array("POST /api/publish/news HTTP/1.1\r\nHost: x\r\n\(headers)\r\nhello".utf8) + post("smuggled")
        let events = readAll([raw])
        #expect(events.count == 1)
        #expect(refusal(events)?.status == status)
        #expect(refusal(events)?.code == code)
    }

    @Test func equalRepeatedLengthsAreOneLength() {
        #expect(bodies(readAll([post("hello", extra: "Content-Length: 5\r\n")])) == ["hello"])
    }

    @Test func headsOverTheLimitAre431WhetherOrNotTheirEndArrived() {
        var limits = HTTPLimits()
        limits.maxHeadBytes = 1024
        let big = Array("GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 2000))\r\n\r\n".utf8)
        #expect(refusal(readAll([big], limits: limits))?.status == 431)
        #expect(refusal(readAll([Array(big.prefix(1500))], limits: limits))?.status == 431, "no end of head yet")
        let many = Array(("GET / HTTP/1.1\r\nHost: x\r\n" + (0..<101).map { "X-\($0): 1\r\n" }.joined() + "\r\n").utf8)
        #expect(refusal(readAll([many]))?.status == 431)
    }

    @Test func chunkedBodiesAreDecoded() {
        let raw = Array("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: 1\r\n\r\n".utf8) + post("next")
        let whole = readAll([raw])
        #expect(bodies(whole) == ["hello, world", "next"])
        for cut in 1..<raw.count { #expect(readAll([Array(raw[..<cut]), Array(raw[cut...])]) == whole, "split at \(cut)") }
        let tooBig = Array("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10001\r\n".utf8)
        #expect(refusal(readAll([tooBig]))?.status == 413)
        let long = Array("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n".utf8)
        #expect(refusal(readAll([long]))?.code == "bad_framing")
        // A signed size (found by the fuzzer: "-3" was read as minus three, then trapped).
        for size in ["-3", "+3", " 3", "0x3"] {
            let signed = Array("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\(size)\r\nabc\r\n0\r\n\r\n".utf8)
            #expect(refusal(readAll([signed]))?.code == "bad_framing", "size \(size)")
        }
    }

    @Test func keepAliveFollowsTheVersionAndConnectionHeader() {
        var reader = HTTPRequestReader()
        reader.append(Array("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        _ = reader.next()
        #expect(reader.closesAfterAnswer)
        reader.answered()
        #expect(reader.isClosed && reader.next() == nil)
        var old = HTTPRequestReader()
        old.append(Array("GET / HTTP/1.0\r\n\r\n".utf8))
        _ = old.next()
        #expect(old.closesAfterAnswer)
        var kept = HTTPRequestReader()
        kept.append(Array("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".utf8))
        _ = kept.next()
        #expect(!kept.closesAfterAnswer)
    }

    @Test func theLastRequestOfAConnectionClosesIt() {
        var limits = HTTPLimits()
        limits.maxRequestsPerConnection = 2
        let get = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        #expect(readAll([get + get + get], limits: limits).count == 2)
    }

    @Test func requestLinesAndTargets() throws {
        #expect(refusal(readAll([Array("GET / HTTP/2.0\r\nHost: x\r\n\r\n".utf8)]))?.status == 505)
        #expect(refusal(readAll([Array("GET  / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)]))?.status == 400)
        #expect(refusal(readAll([Array("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n".utf8)]))?.status == 405)
        #expect(refusal(readAll([Array("GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n".utf8)]))?.status == 400)
        #expect(refusal(readAll([Array("GET /a%00 HTTP/1.1\r\nHost: x\r\n\r\n".utf8)]))?.status == 400)
        #expect(refusal(readAll([Array("GET /?a=%zz HTTP/1.1\r\nHost: x\r\n\r\n".utf8)]))?.status == 400)
        let (path, query) = try HTTPTarget.split("http://h:1/api/history/a%3Ab?since=3&x=a+b%26&flag", method: "GET")
        #expect(path == "/api/history/a:b")
        #expect(query == [HTTPField("since", "3"), HTTPField("x", "a b&"), HTTPField("flag", "")])
        // Empty lines before a request line are skipped; LF alone ends a line.
        let lf = Array("\r\n\nGET /x HTTP/1.1\nHost: x\n\n".utf8)
        guard case let .request(head, _) = readAll([lf]).first else { Issue.record("LF request not read"); return }
        #expect(head.path == "/x")
    }

    @Test func aHandOffCarriesTheRequestAndEverythingAfterIt() {
        let upgrade = Array("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".utf8)
        var reader = HTTPRequestReader()
        reader.append(post("before") + upgrade + [0x81, 0x80])
        guard case .request = reader.next() else { Issue.record("no POST"); return }
        reader.answered()
        guard case let .request(head, _) = reader.next() else { Issue.record("no upgrade"); return }
        #expect(head.isWebSocketUpgrade)
        #expect(reader.takeHandOff() == upgrade + [0x81, 0x80])
        #expect(reader.isClosed)
    }

    @Test func partialRequestsAreKnown() {
        var reader = HTTPRequestReader()
        #expect(!reader.hasPartialRequest)
        reader.append(Array(post("hello").dropLast(2)))
        #expect(reader.next() == nil && reader.hasPartialRequest)
    }

    @Test func responsesAreSerialized() {
        let r = HTTPResponse.error(405, "method_not_allowed", "use GET", headers: [("Allow", "GET")])
        let text = String(decoding: r.serialized(close: true), as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\ncontent-length: \(r.body.count)\r\nconnection: close\r\nallow: GET\r\n\r\n{"))
        #expect(String(decoding: r.serialized(head: true, close: false), as: UTF8.self).hasSuffix("\r\n\r\n"))
    }
}
