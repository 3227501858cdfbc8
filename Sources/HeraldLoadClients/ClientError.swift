import CSocket
#if canImport(Glibc)
import Glibc
#endif

/// Why a load-test client (pool or HTTP publisher) could not start, connect or go on.
public struct ClientError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The module's one reader of `errno`: read it right after the call that failed.
enum OSError {
    static var code: Int32 { herald_errno() }
    /// The call would block or was interrupted: try again later, not an error.
    static var isTransient: Bool {
        let e = code
        return e == EAGAIN || e == EWOULDBLOCK || e == EINTR
    }
    static var isInterrupted: Bool { code == EINTR }
    /// `what: reason`, for example `connect: Connection refused`.
    static func describe(_ what: String) -> String { "\(what): \(String(cString: strerror(code)))" }
    static var reason: String { String(cString: strerror(code)) }
}
