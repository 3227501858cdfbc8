import HeraldCore
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `--log-format json`: one JSON object a line on standard error, with the fields operators
/// filter on at the top level (`node`, `channel`, `conn`, `code`, … as each log line names
/// them): `{"time":"2026-12-02T16:00:00.123Z","level":"info","message":"listening","port":"8080"}`.
/// A line is written with one `write(2)`, under a lock, so lines from several threads never mix.
struct JSONLogHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    let label: String
    private static let output = Mutex(())

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let level = event.level, message = event.message
        var fields = metadata
        if let explicit = event.metadata { fields.merge(explicit) { _, new in new } }
        if let error = event.error { fields["error"] = .string("\(error)") }
        var out = "{\"time\":\(JSON.quoted(Self.timestamp())),\"level\":\(JSON.quoted(level.rawValue)),\"message\":\(JSON.quoted(message.description))"
        for key in fields.keys.sorted() where !["time", "level", "message"].contains(key) {
            out += ",\(JSON.quoted(key)):\(Self.value(fields[key]!))"
        }
        out += "}\n"
        let bytes = Array(out.utf8)
        Self.output.withLock { _ in
            _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
        }
    }

    private static func value(_ v: Logger.Metadata.Value) -> String {
        switch v {
        case let .string(s): JSON.quoted(s)
        case let .stringConvertible(c): JSON.quoted(c.description)
        case let .array(items): "[" + items.map(value).joined(separator: ",") + "]"
        case let .dictionary(d): "{" + d.keys.sorted().map { "\(JSON.quoted($0)):\(value(d[$0]!))" }.joined(separator: ",") + "}"
        }
    }

    /// UTC, milliseconds: `2026-12-02T16:00:00.123Z`.
    private static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let ms = Int(ts.tv_nsec / 1_000_000)
        let millis = ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(millis)Z"
    }
}
