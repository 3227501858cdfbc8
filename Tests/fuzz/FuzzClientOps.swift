// libFuzzer target for hostile input: the permessage-deflate codec, the client-op parser, the connect-URL parser, the JSON
// parser/minifier/encoder, the envelope encoder, presence changes, tokens, X-Forwarded-For and HTTP/1.1
// request framing (random splits and concatenations of valid and invalid requests), with HeraldCore compiled in.
// Built and run by scripts/fuzz (swiftc -sanitize=fuzzer,address); any crash, trap or sanitizer
// report fails the run.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // What a WebSocket client can send.
    switch ClientOpParser.parse(bytes) {
    case let .success(op):
        if case let .subscribe(channel, _) = op { precondition(ChannelName.isValid(channel)) }
        // A client publish or call: a valid channel or method, and data that is JSON.
        if case let .publish(p) = op { precondition(ChannelName.isValid(p.channel) && (try? JSON.parse(p.data)) != nil) }
        if case let .rpc(r) = op { precondition(TalkBack.methodProblem(r.method) == nil && (try? JSON.parse(r.data)) != nil) }
    case let .failure(error):
        let frame = error.frame
        precondition(!frame.contains(0x0A), "an error frame must not contain a raw newline")
        precondition((try? JSON.parse(frame)) != nil, "an error frame must be valid JSON")
    }
    // What a connect URL can carry.
    let text = String(decoding: bytes, as: UTF8.self)
    let request = ConnectRequest.parse(query: text)
    for (channel, _) in request.subscriptions { precondition(ChannelName.isValid(channel)) }
    // What a publisher can send: any body, JSON or not, on the first line's channel.
    let channel = String(text.prefix { $0 != "\n" }.prefix(140))
    if Admission.check(channel: channel, bodySize: bytes.count, maxBytes: 65_536) == nil {
        for contentType in ["application/json", "text/plain", nil] as [String?] {
            if let envelope = try? MessageEnvelope(channel: channel, id: "fuzz", timeMillis: 1, body: bytes, contentType: contentType) {
                let frame = envelope.frame(seq: 7)
                precondition(!frame.contains(0x0A), "a message frame must not contain a raw newline")
                precondition((try? JSON.parse(frame)) != nil, "a message frame must be valid JSON")
                precondition(MessageEnvelope.seq(of: frame) == 7)
            }
        }
    }
    // The validating minifier (no tree built) must accept exactly what the full parser accepts.
    let minified = try? JSON.minify(bytes)
    let parsed = try? JSON.parse(bytes)
    precondition((minified != nil) == (parsed != nil), "JSON.minify and JSON.parse disagree on validity")
    if let minified { precondition((try? JSON.parse(minified)) == parsed, "minifying changed the JSON value") }
    // The answers to a publish or call carry client ids, a worker's messages and its JSON reply.
    var answers: [TalkBackAnswer] = [.published(id: text, channel: text, messageID: text),
                                     .publishFailed(id: text, channel: text, code: .unavailable, message: text),
                                     .rpcError(id: text, code: .workerError, message: text)]
    if let minified { answers.append(.rpcResult(id: text, data: minified)) }
    for answer in answers {
        let frame = answer.frame
        precondition(!frame.contains(0x0A), "an answer frame must not contain a raw newline")
        precondition((try? JSON.parse(frame)) != nil, "an answer frame must be valid JSON")
    }
    // X-Forwarded-For from a trusted proxy: the answer is the peer or a well-formed address
    // that prints back to itself.
    let trusted = [AddressRange("127.0.0.1")!, AddressRange("10.0.0.0/8")!]
    let client = ClientAddress.resolve(peer: "127.0.0.1", forwardedFor: text, trusted: trusted)
    precondition(client == "127.0.0.1" || IPAddress(client)?.description == client, "resolved to a non-address")
    if let address = IPAddress(text) { precondition(IPAddress(address.description) == address, "address does not round-trip") }
    _ = AddressRange(text)
    // Tokens: never crash on garbage.
    let verifier = TokenVerifier(secret: "fuzz-secret-0123456789", hmac: LibCrypto.hmacSHA256)
    _ = verifier.verify(text, nowSeconds: 1)
    // A presence change as a node (or a hostile publisher) sends it to the sequencer: whatever
    // decodes encodes back to the same change, and a member is always a JSON object.
    if case let .success(change) = PresenceChange.decode(bytes) {
        precondition((try? PresenceChange.decode(change.encode()).get()) == change, "a presence change does not round-trip")
        for (_, member) in change.joins { if case .object? = try? JSON.parse(member) {} else { preconditionFailure("member is not an object") } }
    }
    // A connection entry as a survivor reads it from Redis: whatever decodes round-trips.
    if let entry = LifecycleClient.decode(bytes) {
        precondition(LifecycleClient.decode(entry.encoded) == entry, "a lifecycle entry does not round-trip")
    }
    // A Last-Event-ID from any client: what parses encodes back to positions that parse the same,
    // and the encoder never crashes on a frame.
    let positions = EventStreamID.parse(text)
    let reencoded = EventStreamID.encode(positions.sorted { $0.key < $1.key }.map { ($0.key, $0.value.since, $0.value.epoch!) })
    precondition(EventStreamID.parse(reencoded) == positions, "a Last-Event-ID does not round-trip")
    var stream = EventStreamEncoder(resume: positions.map { ($0.key, $0.value) })
    var sse: [UInt8] = []
    stream.encode([bytes], into: &sse)
    // JSON re-encoded from its tree parses to the same tree.
    if let parsed {
        var encoded: [UInt8] = []
        JSON.encode(parsed, to: &encoded)
        precondition((try? JSON.parse(encoded)) == parsed, "JSON.encode changed the value")
    }
    // The strict decoder: whatever it accepts, encoding gives back the same text.
    if let decoded = Base64URL.decode(text) { precondition(Base64URL.encode(decoded) == text, "two spellings of one byte string") }
    fuzzHTTP(bytes)
    fuzzIdentity(bytes, text)
    fuzzDeflate(bytes)
    return 0
}

// MARK: permessage-deflate (issue 33)

nonisolated(unsafe) let fuzzDeflater = Deflater()!  // libFuzzer calls from one thread
nonisolated(unsafe) let fuzzInflater = Inflater()!

/// Any bytes as a compressed message from a client: refused or inflated within the cap, never a
/// crash; and any bytes compressed as a piece inflate back to themselves.
func fuzzDeflate(_ bytes: [UInt8]) {
    switch fuzzInflater.inflate(bytes, cap: 4_096) {
    case let .success(text): precondition(text.count <= 4_096, "inflated past the cap")
    case .failure: break
    }
    let piece = fuzzDeflater.piece(bytes)
    precondition((try? fuzzInflater.inflate(Deflater.messageBody([piece]), cap: 1 << 20).get()) == bytes, "a piece does not inflate to its text")
    // The bytes as a batch: frames split at newlines, some with a shared piece, the rest
    // compressed or stored by the batch; whatever goes out compressed inflates to the batch.
    let frames = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
    let pieces = frames.enumerated().map { i, f in i % 2 == 0 ? fuzzDeflater.piece(f) : nil }
    let minBytes = bytes.first.map { Int($0) } ?? 0
    if let body = fuzzDeflater.batchBody(frames, pieces: pieces, minBytes: minBytes) {
        precondition((try? fuzzInflater.inflate(body, cap: 1 << 20).get()) == bytes, "a batch does not inflate to its frames")
    }
    // The streaming UTF-8 check agrees with the standard library, however the bytes are split.
    var utf8 = UTF8Validator()
    let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
    utf8.feed(bytes[..<cut])
    utf8.feed(bytes[cut...])
    precondition(utf8.isComplete == (String(validating: bytes, as: UTF8.self) != nil), "UTF8Validator disagrees")
    // Any offer: what is accepted answers with an offer that is accepted the same way.
    if let text = String(validating: bytes, as: UTF8.self), let accepted = PerMessageDeflate.negotiate(text) {
        precondition(PerMessageDeflate.negotiate(accepted.response) == accepted, "an answer is not an acceptable offer")
    }
}

// MARK: Identity and control (issue 32)

func fuzzIdentity(_ bytes: [UInt8], _ text: String) {
    // A JWKS from any URL: parsed without a crash; every key it keeps has a DER key and a kind.
    if case let .success(set) = JWKSet.parse(bytes) {
        for key in set.keys { precondition(!key.subjectPublicKeyInfo.isEmpty && key.subjectPublicKeyInfo[0] == 0x30) }
    }
    // Any token against keys of every kind (whose checks accept anything): the algorithm rule
    // alone decides, and a token is never accepted under a key kind its alg does not belong to.
    let kinds: [KeyKind] = [.rsa, .ecP256, .ecP384, .ed25519]
    let verifier = TokenVerifier(keys: StaticTokenKeys(kinds.map { TokenKey(kid: nil, kind: $0) { _, _, _ in true } }))
    if case .success = verifier.verify(text, nowSeconds: 1) {
        let header = text.split(separator: ".").first.flatMap { Base64URL.decode($0) }.flatMap { try? JSON.parse($0) }
        let alg = header?["alg"]?.stringValue.flatMap(JWSAlgorithm.init(rawValue:))
        precondition(alg != nil && alg != .hs256, "a token was accepted with an algorithm no key takes")
    }
    // ECDSA signatures: whatever converts to DER converts back.
    for width in [32, 48] where bytes.count == 2 * width {
        precondition(DER.rawECDSASignature(der: DER.ecdsaSignature(raw: bytes, width: width)!, width: width) == bytes)
    }
    _ = DER.rawECDSASignature(der: bytes, width: 32)
    // An answer from the IdP or a proxy, split anywhere: the same outcome as whole.
    var whole = HTTPResponseParser(maxBodyBytes: 256)
    let once = whole.feed(bytes, ended: true)
    var split = HTTPResponseParser(maxBodyBytes: 256)
    var outcome = HTTPResponseParser.Outcome.incomplete
    let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
    outcome = split.feed(bytes[..<cut])
    if outcome == .incomplete { outcome = split.feed(bytes[cut...], ended: true) }
    if case .complete = once { precondition(outcome == once, "a response read in two pieces differs") }
    // The connect proxy's answer and server commands: parsed or refused, never a crash; what a
    // connect answer yields carries back through the attachment unchanged.
    if case let .success(identity) = ConnectIdentity.parse(bytes, nowSeconds: 1) {
        let back = try? ConnectIdentity.parse(ConnectIdentity.attachment(identity), nowSeconds: 1).get()
        precondition(back == identity, "a connect identity does not survive its attachment")
    }
    for name in ServerCommand.names { _ = ServerCommand.parse(name: name, body: bytes, nowSeconds: 1, revokeSeconds: 60) }
}

// MARK: HTTP/1.1 framing (issue 36)

/// Feeds `chunks` to one reader, answering each request at once: its events in order. At most
/// one refusal, and nothing after it.
func readHTTP(_ chunks: [ArraySlice<UInt8>]) -> [HTTPReadEvent] {
    var reader = HTTPRequestReader(limits: httpLimits)
    var events: [HTTPReadEvent] = []
    for chunk in chunks {
        reader.append(chunk)
        while let event = reader.next() {
            precondition(reader.next() == nil, "a second event before the first was answered")
            events.append(event)
            reader.answered()
        }
    }
    if let i = events.firstIndex(where: { if case .refused = $0 { true } else { false } }) {
        precondition(i == events.count - 1, "an event after a refusal")
    }
    return events
}

let httpLimits: HTTPLimits = { var l = HTTPLimits(); l.maxBodyBytes = 64; l.maxHeadBytes = 512; return l }()

/// Requests whose outcome is known: (bytes, the body it must yield, or the status it must be refused with).
let httpPieces: [([UInt8], Result<String, HTTPRefusal>)] = [
    (Array("POST /api/publish/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".utf8), .success("hello")),
    (Array("POST /api/publish/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".utf8), .success("")),
    (Array("GET /api/history/a?since=1 HTTP/1.1\r\nHost: x\r\n\r\n".utf8), .success("")),
    (Array("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1;e\r\nd\r\n0\r\n\r\n".utf8), .success("abcd")),
    (Array("POST /p HTTP/1.1\nHost: x\nContent-Length: 2\n\nhi".utf8), .success("hi")),
    (Array("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".utf8), .failure(HTTPRefusal(400, "bad_framing", ""))),
    (Array("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".utf8), .failure(HTTPRefusal(400, "bad_framing", ""))),
    (Array("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n".utf8), .failure(HTTPRefusal(400, "bad_framing", ""))),
    (Array("POST /p HTTP/1.1\r\nHost: x\r\n\r\n".utf8), .failure(HTTPRefusal(411, "length_required", ""))),
    (Array("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n".utf8), .failure(HTTPRefusal(413, "too_large", ""))),
    (Array(("GET / HTTP/1.1\r\nHost: x\r\nX: " + String(repeating: "a", count: 600) + "\r\n\r\n").utf8), .failure(HTTPRefusal(431, "headers_too_large", ""))),
]

func fuzzHTTP(_ bytes: [UInt8]) {
    // Any bytes: the same events whole and split where the input says.
    let whole = readHTTP([bytes[...]])
    var chunks: [ArraySlice<UInt8>] = []
    var at = 0
    var cut = 0
    while at < bytes.count {
        let step = 1 + Int(bytes[cut % bytes.count]) % 37
        chunks.append(bytes[at..<min(bytes.count, at + step)])
        at += step
        cut += 1
    }
    precondition(readHTTP(chunks) == whole, "splitting the bytes changed what was read")
    // Known requests, concatenated as the input picks them and split where it says: one outcome
    // per request up to the first refusal, each body exactly as sent.
    guard let first = bytes.first else { return }
    let picks = bytes.dropFirst().prefix(Int(first % 8) + 1).map { httpPieces[Int($0) % httpPieces.count] }
    let stream = picks.flatMap(\.0)
    var expected: [String] = []
    var refusedWith: Int?
    for (_, outcome) in picks {
        switch outcome {
        case let .success(body): expected.append(body)
        case let .failure(r): refusedWith = r.status
        }
        if refusedWith != nil { break }
    }
    var pieces: [ArraySlice<UInt8>] = []
    var pos = 0
    var k = 0
    while pos < stream.count {
        let step = 1 + Int(bytes[k % bytes.count] ^ 0x5A) % 61
        pieces.append(stream[pos..<min(stream.count, pos + step)])
        pos += step
        k += 1
    }
    let events = readHTTP(pieces)
    let bodies = events.compactMap { if case let .request(_, body) = $0 { String(decoding: body, as: UTF8.self) } else { nil } }
    precondition(bodies == expected, "bodies \(bodies) differ from \(expected)")
    let refused = events.compactMap { if case let .refused(r) = $0 { r.status } else { nil } }
    precondition(refused == (refusedWith.map { [$0] } ?? []), "refusal \(refused), expected \(String(describing: refusedWith))")
}
