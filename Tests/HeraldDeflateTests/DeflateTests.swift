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
