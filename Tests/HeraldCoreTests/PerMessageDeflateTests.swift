import Testing
@testable import HeraldCore

/// Which permessage-deflate offer Herald takes (RFC 7692 §7.1) and what it answers.
@Suite struct PerMessageDeflateTests {
    let both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

    @Test(arguments: [
        // What browsers and Python websockets send.
        ("permessage-deflate; client_max_window_bits", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ("permessage-deflate", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ("Permessage-Deflate ;  Server_No_Context_Takeover", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ("permessage-deflate; client_max_window_bits=10; client_no_context_takeover", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        // A window the client asks for is honoured and named.
        ("permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"),
        ("permessage-deflate; server_max_window_bits=\"12\"", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12"),
        // Offers Herald cannot honour are skipped for the next one.
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"),
        ("x-webkit-deflate-frame, permessage-deflate", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ("permessage-deflate; foo, permessage-deflate", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ])
    func acceptedOffers(offer: String, answer: String) {
        #expect(PerMessageDeflate.negotiate(offer)?.response == answer)
    }

    @Test(arguments: [
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=8",       // zlib cannot write an 8-bit raw window
        "permessage-deflate; server_max_window_bits",         // needs a value
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; mystery_parameter",
    ])
    func declinedOffers(offer: String) {
        #expect(PerMessageDeflate.negotiate(offer) == nil)
    }

    @Test func theWindowIsWhatTheClientAskedFor() {
        #expect(PerMessageDeflate.negotiate("permessage-deflate; server_max_window_bits=9")?.serverWindowBits == 9)
        #expect(PerMessageDeflate.negotiate("permessage-deflate")?.serverWindowBits == 15)
        #expect(PerMessageDeflate.negotiate("permessage-deflate")?.response.hasPrefix(both) == true)
    }
}
