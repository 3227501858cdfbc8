// libFuzzer target for hostile input: the client-op parser, the connect-URL parser, the JSON
// parser/minifier/encoder, the envelope encoder, presence changes, tokens and X-Forwarded-For, with HeraldCore compiled in.
// Built and run by scripts/fuzz (swiftc -sanitize=fuzzer,address); any crash, trap or sanitizer
// report fails the run.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // What a WebSocket client can send.
    switch ClientOpParser.parse(bytes) {
    case let .success(op):
        if case let .subscribe(channel, _) = op { precondition(ChannelName.isValid(channel)) }
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
    return 0
}
