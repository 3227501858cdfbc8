import Testing
@testable import HeraldDeflate

/// permessage-deflate's codec: pieces compressed independently concatenate into one message body
/// that inflates to the concatenated texts (the property batching relies on), also past the
/// 32 KiB window and with a smaller one; inflation is capped and corrupt data is refused.
@Suite struct DeflateTests {
    /// Text that compresses like real traffic: JSON with repeated keys and varying numbers.
    func json(_ size: Int, seed: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        var x = seed
        while out.count < size {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            out += Array(#"{"symbol":"S\#(x % 97)","price":\#(x % 100_000),"qty":\#(x >> 40 % 1000)},"#.utf8)
        }
        return Array(out.prefix(size))
    }

    /// Bytes that do not compress.
    func noise(_ size: Int, seed: UInt64) -> [UInt8] {
        var x = seed
        return (0..<size).map { _ in
            x = x &* 2862933555777941757 &+ 3037000493
            return UInt8(truncatingIfNeeded: x >> 33)
        }
    }

    @Test(arguments: [15, 10] as [Int32])
    func independentPiecesConcatenateIntoOneMessage(windowBits: Int32) throws {
        let deflater = try #require(Deflater(windowBits: windowBits))
        let inflater = try #require(Inflater(windowBits: 15))
        let sizes = [10, 2_000, 32_767, 32_768, 32_769, 40_000, 300_000, 1]
        let messages = sizes.enumerated().map { i, n in i % 3 == 2 ? noise(n, seed: UInt64(i)) : json(n, seed: UInt64(i)) }
        let separator = deflater.piece(Array("\n".utf8))
        var pieces: [[UInt8]] = []
        for (i, m) in messages.enumerated() {
            if i > 0 { pieces.append(separator) }
            let piece = deflater.piece(m)
            #expect(Array(piece.suffix(4)) == [0, 0, 0xFF, 0xFF])
            pieces.append(piece)
        }
        let body = Deflater.messageBody(pieces)
        let text = try inflater.inflate(body, cap: 1 << 20).get()
        #expect(text == Array(messages.joined(separator: Array("\n".utf8))))
        // Each piece also stands alone, and the inflater starts afresh for each message.
        for m in messages.prefix(4) {
            #expect(try inflater.inflate(Deflater.messageBody([deflater.piece(m)]), cap: 1 << 20).get() == m)
        }
        // Real traffic shrinks (the JSON message of 300,000 bytes to under a fifth); noise does not grow much.
        #expect(deflater.piece(messages[6]).count < messages[6].count / 5)
        #expect(deflater.piece(messages[5]).count < messages[5].count * 101 / 100)
    }

    @Test func aBombStopsAtTheCap() throws {
        let deflater = try #require(Deflater())
        let inflater = try #require(Inflater())
        let bomb = deflater.piece([UInt8](repeating: 0, count: 100 << 20))
        #expect(bomb.count < 120_000)  // about 100 KB that would inflate to 100 MiB
        #expect(inflater.inflate(Deflater.messageBody([bomb]), cap: 65_536) == .failure(.tooLarge))
        // Exactly at the cap is fine.
        let fits = deflater.piece([UInt8](repeating: 7, count: 65_536))
        #expect(try inflater.inflate(Deflater.messageBody([fits]), cap: 65_536).get().count == 65_536)
    }

    @Test func corruptDataIsRefused() throws {
        let inflater = try #require(Inflater())
        #expect(inflater.inflate([0xFF, 0xFF, 0xFF, 0xFF], cap: 1_000) == .failure(.corrupt))
        // After a refusal the next message inflates as usual.
        let deflater = try #require(Deflater())
        #expect(try inflater.inflate(Deflater.messageBody([deflater.piece(Array("hello".utf8))]), cap: 1_000).get() == Array("hello".utf8))
        #expect(Deflater(windowBits: 16) == nil && Deflater(windowBits: 8) == nil)
    }
}

/// The batches Herald writes: shared pieces, pieces made per connection, stored blocks for small
/// frames and the newlines between them, all in one message body.
@Suite struct BatchBodyTests {
    let t = DeflateTests()

    func inflate(_ body: [UInt8]) throws -> [UInt8] {
        let inflater = try #require(Inflater(windowBits: 15))
        return try inflater.inflate(body, cap: 4 << 20).get()
    }

    @Test func aMixedBatchInflatesToTheFramesJoinedByNewlines() throws {
        let shared = try #require(Deflater())
        let connection = try #require(Deflater())
        let frames = [t.json(10, seed: 1), t.json(2_000, seed: 2), t.json(300_000, seed: 3), t.json(100, seed: 4),
                      t.noise(5_000, seed: 5), t.json(70_000, seed: 6), t.json(1, seed: 7)]
        // Some frames come with the node's shared piece, the others are compressed or stored here.
        let pieces: [[UInt8]?] = [nil, shared.piece(frames[1]), nil, nil, nil, shared.piece(frames[5]), nil]
        let body = try #require(connection.batchBody(frames, pieces: pieces, minBytes: 128))
        #expect(try inflate(body) == Array(frames.joined(separator: [0x0A])))
        #expect(body.count < frames.reduce(0) { $0 + $1.count } / 3)
    }

    @Test func smallFramesAloneGoOutPlainAndCostNothing() throws {
        let d = try #require(Deflater())
        #expect(d.batchBody([t.json(10, seed: 1), t.json(100, seed: 2)], pieces: [], minBytes: 128) == nil)
        // Incompressible data is not sent compressed either.
        #expect(d.batchBody([t.noise(4_000, seed: 3)], pieces: [nil], minBytes: 128) == nil)
    }

    @Test func aSmallFrameBesideALargeOneCostsAFewBytes() throws {
        let d = try #require(Deflater())
        let small = t.json(10, seed: 1), large = t.json(4_000, seed: 2)
        let alone = try #require(d.batchBody([large], pieces: [nil], minBytes: 128))
        let both = try #require(d.batchBody([large, small], pieces: [nil, nil], minBytes: 128))
        #expect(try inflate(both) == large + [0x0A] + small)
        // The small frame and its newline go stored: their bytes, a 5-byte block header, and
        // the byte that ends the body as a sync flush does.
        #expect(both.count - alone.count <= small.count + 1 + 5 + 1 + 4)
    }

    @Test func storedRunsSplitAt65535Bytes() throws {
        let d = try #require(Deflater())
        // Many frames just under the threshold: one stored run far longer than a stored block holds.
        let frames = (0..<1_000).map { t.json(127, seed: UInt64($0)) } + [t.json(1_000, seed: 9)]
        let body = try #require(d.batchBody(frames, pieces: [], minBytes: 128))
        #expect(try inflate(body) == Array(frames.joined(separator: [0x0A])))
    }

    @Test func aSharedPieceFromAWiderWindowIsUsedOnlyWhereItFits() throws {
        let shared = try #require(Deflater(windowBits: 15))
        let narrow = try #require(Deflater(windowBits: 10))
        let fits = t.json(1_000, seed: 1), wide = t.json(50_000, seed: 2)
        let body = try #require(narrow.batchBody([fits, wide], pieces: [shared.piece(fits), shared.piece(wide)], minBytes: 128))
        // A client that asked for a 10-bit window must be able to inflate it with one.
        let inflater = try #require(Inflater(windowBits: 10))
        #expect(try inflater.inflate(body, cap: 1 << 20).get() == fits + [0x0A] + wide)
    }

    @Test func minBytesZeroCompressesEverything() throws {
        let d = try #require(Deflater())
        let body = try #require(d.compressedBody(Array("hi".utf8), minBytes: 0))
        #expect(try inflate(body) == Array("hi".utf8))
    }
}
