import Testing
@testable import HeraldCore

/// The streaming UTF-8 check agrees with Swift's own decoder on every split of every input, and
/// refuses at the first byte that cannot continue valid text.
@Suite struct UTF8ValidatorTests {
    static let samples: [[UInt8]] = [
        Array("hello".utf8), Array("κόσμε".utf8), Array("€ 𝄞 ✓".utf8), [],
        [0xED, 0xA0, 0x80],             // a surrogate
        [0xF4, 0x90, 0x80, 0x80],       // above U+10FFFF
        [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xF0, 0x80, 0x80, 0xAF],  // overlong
        [0xCE, 0xBA, 0xE1],             // cut short
        [0x80], [0xFF], [0xF8, 0x88, 0x80, 0x80, 0x80],
        [0xF0, 0x9F, 0x98, 0x80, 0x41], [0xEF, 0xBF, 0xBF], [0xF4, 0x8F, 0xBF, 0xBF],
    ]

    @Test(arguments: samples)
    func agreesWithTheStandardLibraryOnEverySplit(bytes: [UInt8]) {
        let expected = String(validating: bytes, as: UTF8.self) != nil
        #expect(UTF8Validator.isValid(bytes) == expected)
        for cut in 0...bytes.count {
            var v = UTF8Validator()
            v.feed(bytes[..<cut])
            v.feed(bytes[cut...])
            #expect(v.isComplete == expected)
        }
    }

    @Test func failsAtTheFirstImpossibleByte() {
        var v = UTF8Validator()
        let first = v.feed(Array("κό".utf8))
        let second = v.feed([0xCE, 0x41])   // a lead byte followed by ASCII
        let third = v.feed(Array("more".utf8))
        #expect(first && !second && !third && !v.isComplete)
        var cut = UTF8Validator()
        let unfinished = cut.feed([0xE2, 0x82])   // fine so far, but unfinished
        #expect(unfinished && !cut.isComplete)
    }
}
