import HeraldCore
#if canImport(Glibc)
import Glibc
#endif

/// Repeated flags and comma-separated environment values, as one list.
func splitList(_ values: [String]) -> [String] {
    values.flatMap { $0.split(separator: ",").map { String($0).trimmingSpaces() } }.filter { !$0.isEmpty }
}

/// 10,000 clients need 10,000 descriptors: lift the soft limit to the hard one.
func raiseFileLimit() {
    var limit = rlimit()
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 && limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}

