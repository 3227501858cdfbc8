import Testing
@testable import HeraldCore

/// Herald's outbound answers (JWKS, connect proxy): every framing, byte by byte, and the bounds.
@Suite struct HTTPResponseParserTests {
    func parseByteByByte(_ text: String, ended: Bool = false, max: Int = 1_000) -> HTTPResponseParser.Outcome {
        var parser = HTTPResponseParser(maxBodyBytes: max)
        let bytes = Array(text.utf8)
        for (i, b) in bytes.enumerated() {
            let outcome = parser.feed([b], ended: ended && i == bytes.count - 1)
            if outcome != .incomplete { return outcome }
        }
        return .incomplete
    }

    @Test func contentLengthChunkedAndCloseDelimitedBodies() {
        guard case let .complete(r) = parseByteByByte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b \r\n\r\nhello") else {
            Issue.record("not complete"); return
        }
        #expect(r.status == 200 && r.body == Array("hello".utf8) && r.keepAlive && r.header("x-a") == "b")
        guard case let .complete(c) = parseByteByByte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1\r\n!\r\n0\r\n\r\n") else {
            Issue.record("chunked not complete"); return
        }
        #expect(c.body == Array("hello!".utf8))
        #expect(parseByteByByte("HTTP/1.0 200 OK\r\n\r\nabc") == .incomplete)
        guard case let .complete(e) = parseByteByByte("HTTP/1.0 200 OK\r\n\r\nabc", ended: true) else { Issue.record("close-delimited"); return }
        #expect(e.body == Array("abc".utf8) && !e.keepAlive)
        guard case let .complete(n) = parseByteByByte("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n") else { Issue.record("204"); return }
        #expect(n.body.isEmpty && !n.keepAlive)
    }

    @Test func badOrOversizedAnswersAreRefused() {
        #expect(parseByteByByte("HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n") == .bad("response body larger than 1000 bytes"))
        #expect(parseByteByByte("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n") == .bad("bad Content-Length"))
        #expect(parseByteByByte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\n") == .bad("bad chunk size"))
        #expect(parseByteByByte("SMTP 220 hi\r\n\r\n") == .bad("bad status line"))
        #expect(parseByteByByte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", ended: true) == .bad("connection closed inside the body"))
        #expect(parseByteByByte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n") == .bad("bad chunk framing"))
    }
}
