#if canImport(Glibc)
import Glibc
#endif

/// CPU time and resident memory of a process, from /proc (Linux).
public struct ProcStats: Sendable {
    public let cpuSeconds: Double
    public let rssKB: Int

    public static func read(pid: Int32?) -> ProcStats? {
        let who = pid.map(String.init) ?? "self"
        guard let stat = slurp("/proc/\(who)/stat"), let status = slurp("/proc/\(who)/status") else { return nil }
        // Fields after the ")" that closes the command name: state is field 3; utime 14, stime 15.
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var rss = 0
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            rss = Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return ProcStats(cpuSeconds: (utime + stime) / ticks, rssKB: rss)
    }

    static func slurp(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var out = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n <= 0 { break }
            out.append(contentsOf: buffer[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
