/// permessage-deflate negotiation (RFC 7692 §7.1): which of a client's offers Herald takes, and
/// its answer.
///
/// Herald always answers with `server_no_context_takeover` and `client_no_context_takeover`:
/// every message it sends is compressed on its own, so one compressed copy serves every
/// connection, and every message a client sends is inflated by one shared inflater reset per
/// message. It honours `server_max_window_bits` (9 to 15: zlib cannot write an 8-bit raw
/// window, so an offer asking for 8 is declined). An offer with an unknown, repeated or
/// malformed parameter is declined (RFC 7692 §7.1); the next offer is then considered.
public struct PerMessageDeflate: Equatable, Sendable {
    /// The window Herald compresses with: the client's `server_max_window_bits`, else 15.
    public let serverWindowBits: Int
    /// The client asked for `server_max_window_bits`, so the answer names it.
    public let serverWindowRequested: Bool

    public init(serverWindowBits: Int = 15, serverWindowRequested: Bool = false) {
        self.serverWindowBits = serverWindowBits
        self.serverWindowRequested = serverWindowRequested
    }

    public static let name = "permessage-deflate"

    /// The `Sec-WebSocket-Extensions` value of Herald's answer.
    public var response: String {
        var out = "\(Self.name); server_no_context_takeover; client_no_context_takeover"
        if serverWindowRequested { out += "; server_max_window_bits=\(serverWindowBits)" }
        return out
    }

    /// The first `permessage-deflate` offer in a `Sec-WebSocket-Extensions` value (all of a
    /// request's headers joined with commas) that Herald can honour, or nil.
    public static func negotiate(_ header: String) -> PerMessageDeflate? {
        for offer in offers(header) where offer.name == name {
            if let accepted = accept(offer.parameters) { return accepted }
        }
        return nil
    }

    private static func accept(_ parameters: [(String, String?)]) -> PerMessageDeflate? {
        var seen = Set<String>()
        var window: Int?
        for (key, value) in parameters {
            guard seen.insert(key).inserted else { return nil }
            switch key {
            case "server_no_context_takeover", "client_no_context_takeover":
                guard value == nil else { return nil }
            case "server_max_window_bits":
                guard let bits = value.flatMap(windowBits) else { return nil }
                guard bits >= 9 else { return nil }
                window = bits
            case "client_max_window_bits":
                // A hint that the client can limit its window; Herald inflates with 15 bits,
                // which reads any smaller window, so it need not answer.
                if let value, windowBits(value) == nil { return nil }
            default:
                return nil
            }
        }
        return PerMessageDeflate(serverWindowBits: window ?? 15, serverWindowRequested: window != nil)
    }

    private static func windowBits(_ value: String) -> Int? {
        guard value.utf8.count <= 2, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let n = Int(value), (8...15).contains(n), value.first != "0" else { return nil }
        return n
    }

    /// The offers in a header value: `name *( ";" param [ "=" value ] )`, comma separated,
    /// values possibly quoted.
    static func offers(_ header: String) -> [(name: String, parameters: [(String, String?)])] {
        var out: [(name: String, parameters: [(String, String?)])] = []
        for element in split(header, on: ",") {
            let parts = split(element, on: ";").map { $0.trimmingSpaces() }
            guard let first = parts.first, !first.isEmpty else { continue }
            var parameters: [(String, String?)] = []
            for part in parts.dropFirst() {
                if let eq = part.firstIndex(of: "=") {
                    var value = String(part[part.index(after: eq)...]).trimmingSpaces()
                    if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
                    parameters.append((String(part[..<eq]).trimmingSpaces().lowercased(), value))
                } else {
                    parameters.append((part.lowercased(), nil))
                }
            }
            out.append((first.lowercased(), parameters))
        }
        return out
    }

    /// Splits on `separator` outside double quotes.
    private static func split(_ s: String, on separator: Character) -> [String] {
        var parts: [String] = []
        var current = ""
        var quoted = false
        for c in s {
            if c == "\"" { quoted.toggle() }
            if c == separator && !quoted {
                parts.append(current)
                current = ""
            } else {
                current.append(c)
            }
        }
        parts.append(current)
        return parts
    }
}
