#if canImport(Glibc)
import Glibc
#endif

func sleepMillis(_ ms: Int) { usleep(useconds_t(ms * 1000)) }

/// One line on standard error (progress), unbuffered.
public func printError(_ line: String) {
    let text = line + "\n"
    _ = write(2, text, text.utf8.count)
}

func fmt(_ value: Double, _ decimals: Int) -> String {
    if !value.isFinite { return "-" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    if decimals == 0 { return String(Int(rounded)) }
    var s = String(rounded)
    if let dot = s.firstIndex(of: ".") {
        let have = s.distance(from: dot, to: s.endIndex) - 1
        if have < decimals { s += String(repeating: "0", count: decimals - have) }
    }
    return s
}
