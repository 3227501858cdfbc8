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


struct FileError: Error, CustomStringConvertible {
    let description: String
    var code: Int32 = 0

    /// `what` and the reason errno gives (the one place this module reads errno).
    static func system(_ what: String) -> FileError {
        let code = errno
        return FileError(description: "\(what): \(String(cString: strerror(code)))", code: code)
    }
}

/// The whole of a text file.
func readTextFile(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileError.system("cannot open") }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = read(fd, &chunk, chunk.count)
        if n < 0 {
            let error = FileError.system("cannot read")
            if error.code == EINTR { continue }
            throw error
        }
        if n == 0 { break }
        bytes += chunk[0..<n]
        if bytes.count > 16 << 20 { throw FileError(description: "larger than 16 MiB") }
    }
    guard let text = String(validating: bytes, as: UTF8.self) else { throw FileError(description: "not UTF-8 text") }
    return text
}

/// A secret kept in a file: its text without the trailing line break(s); empty is an error.
func readSecretFile(_ path: String) throws -> String {
    var text = Substring(try readTextFile(path))
    while let last = text.last, last == "\n" || last == "\r" || last == "\r\n" { text = text.dropLast() }
    guard !text.isEmpty else { throw FileError(description: "the file is empty") }
    return String(text)
}
