import CHiredis
import HeraldCore

/// A Redis reply, copied out of hiredis before the reply object is freed.
public enum RedisReply: Equatable, Sendable {
    case string([UInt8])
    case status(String)
    case integer(Int64)
    case array([RedisReply])
    case null
    case error(String)

    public var bytes: [UInt8]? {
        if case let .string(b) = self { return b }
        if case let .status(s) = self { return Array(s.utf8) }
        return nil
    }

    public var text: String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

    public var integer: Int64? {
        switch self {
        case let .integer(i): return i
        case let .string(b): return Int64(String(decoding: b, as: UTF8.self))
        default: return nil
        }
    }
}

public struct RedisError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// Redis answered READONLY: this node is a replica now (demoted by a failover); the
    /// connection is closed and the master must be found again.
    public let isReadOnly: Bool
    public init(_ description: String, isReadOnly: Bool = false) {
        self.description = description
        self.isReadOnly = isReadOnly
    }
}

/// Where Redis is: `redis://[:password@]host[:port][/db]`.
public struct RedisEndpoint: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port: Int32 = 6379
    public var db = 0
    public var password: String?

    public init(url: String) throws(RedisError) {
        guard url.hasPrefix("redis://") else { throw RedisError("Redis URL must start with redis:// (got \(url))") }
        var rest = Substring(url.dropFirst("redis://".count))
        if let at = rest.lastIndex(of: "@") {
            let auth = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let pw = auth.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).last ?? ""
            if !pw.isEmpty { password = String(pw) }
        }
        var hostPort = rest
        if let slash = rest.firstIndex(of: "/") {
            hostPort = rest[..<slash]
            let dbText = rest[rest.index(after: slash)...]
            if !dbText.isEmpty {
                guard let d = Int(dbText) else { throw RedisError("bad database number in Redis URL \(url)") }
                db = d
            }
        }
        if let colon = hostPort.lastIndex(of: ":") {
            guard let p = Int32(hostPort[hostPort.index(after: colon)...]) else { throw RedisError("bad port in Redis URL \(url)") }
            port = p
            hostPort = hostPort[..<colon]
        }
        if !hostPort.isEmpty { host = String(hostPort) }
    }
}

/// One synchronous hiredis connection.
///
/// - Important: confined to the thread that uses it; hiredis contexts are not thread-safe.
///   Any error leaves the connection closed; the owner reconnects (with backoff).
public final class RedisConnection {
    private var context: UnsafeMutablePointer<redisContext>?
    /// Set for a Redis Cluster: every command goes to the master of its key's slot, through
    /// one connection per master (`RedisClusterState`); `context` stays unused.
    private let cluster: RedisClusterState?
    /// The single Redis, or the cluster's first seed.
    public let endpoint: RedisEndpoint
    public let timeoutMillis: Int

    public init(endpoint: RedisEndpoint, timeoutMillis: Int = 2_000) {
        self.endpoint = endpoint
        self.timeoutMillis = timeoutMillis
        cluster = nil
    }

    /// A connection to a Redis Cluster (`endpoint` carries the password and the first seed).
    public init(cluster config: RedisClusterConfig, endpoint: RedisEndpoint, timeoutMillis: Int = 2_000) {
        var first = endpoint
        if let seed = config.seeds.first { (first.host, first.port) = (seed.host, Int32(seed.port)) }
        self.endpoint = first
        self.timeoutMillis = timeoutMillis
        cluster = RedisClusterState(config: config, endpoint: endpoint, timeoutMillis: timeoutMillis)
    }

    deinit { close() }

    public var isConnected: Bool { cluster?.isConnected ?? (context != nil) }

    /// The masters a cluster connection knows (nil for a single Redis).
    public var clusterMasters: [ClusterNode]? { cluster?.masters }

    public func connect() throws(RedisError) {
        close()
        if let cluster { return try cluster.connect() }
        let tv = timeval(tv_sec: timeoutMillis / 1000, tv_usec: (timeoutMillis % 1000) * 1000)
        guard let ctx = redisConnectWithTimeout(endpoint.host, Int32(endpoint.port), tv) else {
            throw RedisError("cannot allocate a Redis context")
        }
        if ctx.pointee.err != 0 {
            let message = Self.errorString(ctx)
            redisFree(ctx)
            throw RedisError("cannot connect to Redis at \(endpoint.host):\(endpoint.port): \(message)")
        }
        _ = redisSetTimeout(ctx, tv)
        _ = redisEnableKeepAlive(ctx)
        context = ctx
        if let password = endpoint.password {
            if case let .error(e) = try command(["AUTH", password]) { close(); throw RedisError("Redis AUTH failed: \(e)") }
        }
        if endpoint.db != 0 {
            if case let .error(e) = try command(["SELECT", String(endpoint.db)]) { close(); throw RedisError("Redis SELECT failed: \(e)") }
        }
    }

    public func close() {
        cluster?.close()
        if let context { redisFree(context) }
        context = nil
    }

    public func command(_ args: [String]) throws(RedisError) -> RedisReply {
        try pipeline([args.map { Array($0.utf8) }])[0]
    }

    /// Redis `WAIT`: how many replicas hold every write made so far (on a Redis Cluster, the
    /// fewest of any master written since the last wait), waiting up to `timeoutMillis` for
    /// `replicas`. Anything but a count (a demoted master answers `WAIT` with an error) closes
    /// the connection and throws: the writes are to be made again where the master is now.
    public func waitReplicas(_ replicas: Int, timeoutMillis: Int) throws(RedisError) -> Int {
        let reply = try command(["WAIT", String(replicas), String(timeoutMillis)])
        guard case let .integer(count) = reply else {
            close()
            throw RedisError("Redis at \(endpoint.host):\(endpoint.port) answered WAIT with \(reply)", isReadOnly: true)
        }
        return Int(count)
    }

    public func command(bytes args: [[UInt8]]) throws(RedisError) -> RedisReply {
        try pipeline([args])[0]
    }

    /// Sends every command, then reads every reply: one round trip for the whole batch.
    public func pipeline(_ commands: [[[UInt8]]]) throws(RedisError) -> [RedisReply] {
        try send(commands)
        return try receive(count: commands.count)
    }

    /// Writes every command to the socket without reading a reply, so the caller can do other
    /// work while Redis runs them; `receive(count:)` reads the replies, in order.
    public func send(_ commands: [[[UInt8]]]) throws(RedisError) {
        if let cluster { return try cluster.send(commands) }
        guard let ctx = context else { throw RedisError("not connected to Redis") }
        for args in commands {
            let status = Self.withArgv(args) { argc, argv, lens in
                redisAppendCommandArgv(ctx, argc, argv, lens)
            }
            if status != REDIS_OK {
                let message = Self.errorString(ctx)
                close()
                throw RedisError("Redis write failed: \(message)")
            }
        }
        var done: Int32 = 0
        while done == 0 {
            if redisBufferWrite(ctx, &done) != REDIS_OK {
                let message = Self.errorString(ctx)
                close()
                throw RedisError("Redis write failed: \(message)")
            }
        }
    }

    /// Reads the next `count` replies (blocking, within the connection's timeout).
    public func receive(count: Int) throws(RedisError) -> [RedisReply] {
        if let cluster { return try cluster.receive(count: count) }
        guard let ctx = context else { throw RedisError("not connected to Redis") }
        var replies = [RedisReply]()
        replies.reserveCapacity(count)
        for _ in 0..<count {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(ctx, &raw) != REDIS_OK || raw == nil {
                let message = Self.errorString(ctx)
                close()
                throw RedisError("Redis connection lost: \(message)")
            }
            let reply = raw!.assumingMemoryBound(to: redisReply.self)
            defer { freeReplyObject(raw) }
            replies.append(Self.copy(reply))
        }
        // A replica refuses every write with READONLY: whatever the caller sent is not stored,
        // and this connection is of no further use. Said here once, for every caller.
        for reply in replies {
            if case let .error(e) = reply, e.hasPrefix("READONLY") {
                close()
                throw RedisError("Redis at \(endpoint.host):\(endpoint.port) is a replica now: \(e)", isReadOnly: true)
            }
        }
        return replies
    }

    static func copy(_ r: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_STRING:
            return .string(Self.bytes(reply.str, Int(reply.len)))
        case REDIS_REPLY_STATUS:
            return .status(String(decoding: Self.bytes(reply.str, Int(reply.len)), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: Self.bytes(reply.str, Int(reply.len)), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(reply.integer)
        case REDIS_REPLY_ARRAY:
            var items = [RedisReply]()
            items.reserveCapacity(Int(reply.elements))
            for i in 0..<Int(reply.elements) {
                if let element = reply.element[i] { items.append(copy(element)) } else { items.append(.null) }
            }
            return .array(items)
        default:
            return .null
        }
    }

    static func bytes(_ p: UnsafeMutablePointer<CChar>?, _ n: Int) -> [UInt8] {
        guard let p, n > 0 else { return [] }
        return p.withMemoryRebound(to: UInt8.self, capacity: n) { Array(UnsafeBufferPointer(start: $0, count: n)) }
    }

    static func errorString(_ ctx: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: ctx.pointee.errstr) { raw in
            let bytes = raw.prefix(while: { $0 != 0 })
            return bytes.isEmpty ? "connection error \(ctx.pointee.err)" : String(decoding: bytes, as: UTF8.self)
        }
    }

    static func withArgv<R>(_ args: [[UInt8]], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
        // One contiguous copy keeps every argument alive for the duration of the call.
        var total = 1
        for a in args { total += a.count }
        var storage = [UInt8]()
        storage.reserveCapacity(total)
        var offsets = [Int]()
        offsets.reserveCapacity(args.count)
        var lengths = [Int]()
        lengths.reserveCapacity(args.count)
        for a in args {
            offsets.append(storage.count)
            lengths.append(a.count)
            storage.append(contentsOf: a)
        }
        storage.append(0)
        return storage.withUnsafeBufferPointer { buffer in
            let base = UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self)
            var argv = offsets.map { Optional(base + $0) }
            return argv.withUnsafeMutableBufferPointer { argvBuffer in
                lengths.withUnsafeBufferPointer { lens in
                    body(Int32(args.count), argvBuffer.baseAddress!, lens.baseAddress!)
                }
            }
        }
    }
}

/// Wakes a thread that waits on a PUB/SUB connection (`receiveAvailable`) when another thread
/// has work for it (an eventfd).
public final class RedisWake: Sendable {
    let fd: Int32
    public init() { fd = herald_redis_eventfd() }
    deinit { herald_redis_close_fd(fd) }
    public func signal() { herald_redis_wake(fd) }
}

extension RedisConnection {
    /// For a PUB/SUB connection: the replies and messages that have arrived, waiting up to
    /// `timeoutMillis` for the first one, or less when `wake` is signalled (then possibly none).
    /// Never blocks on a partly received reply: what is incomplete stays buffered for the next call.
    public func receiveAvailable(timeoutMillis: Int32, wake: RedisWake?) throws(RedisError) -> [RedisReply] {
        if let cluster { return try cluster.receiveAvailable(timeoutMillis: timeoutMillis, wake: wake) }
        guard let ctx = context else { throw RedisError("not connected to Redis") }
        var replies = try buffered(ctx)
        if !replies.isEmpty { return replies }
        let ready = herald_redis_wait(ctx.pointee.fd, wake?.fd ?? -1, timeoutMillis)
        guard ready & 1 != 0 else { return [] }
        if redisBufferRead(ctx) != REDIS_OK {
            let message = Self.errorString(ctx)
            close()
            throw RedisError("Redis connection lost: \(message)")
        }
        replies = try buffered(ctx)
        return replies
    }

    /// Writes commands without waiting for their replies (a PUB/SUB connection's SUBSCRIBE,
    /// UNSUBSCRIBE and PING: their confirmations arrive among the messages).
    public func sendCommands(_ commands: [[String]]) throws(RedisError) {
        if let cluster { return try cluster.sendPubSub(commands) }
        try send(commands.map { $0.map { Array($0.utf8) } })
    }

    /// The socket, for a cluster's wait on all its nodes (-1 when closed).
    var fileDescriptor: Int32 { context.map { Int32($0.pointee.fd) } ?? -1 }

    /// The replies buffered or readable now, without blocking (after a wait said the socket is ready).
    func readReady() throws(RedisError) -> [RedisReply] {
        guard let ctx = context else { throw RedisError("not connected to Redis") }
        if redisBufferRead(ctx) != REDIS_OK {
            let message = Self.errorString(ctx)
            close()
            throw RedisError("Redis connection lost: \(message)")
        }
        return try buffered(ctx)
    }

    /// The replies already read from the socket and not yet handed out.
    func bufferedReplies() throws(RedisError) -> [RedisReply] {
        guard let ctx = context else { throw RedisError("not connected to Redis") }
        return try buffered(ctx)
    }

    private func buffered(_ ctx: UnsafeMutablePointer<redisContext>) throws(RedisError) -> [RedisReply] {
        var replies: [RedisReply] = []
        while true {
            var raw: UnsafeMutableRawPointer?
            if redisGetReplyFromReader(ctx, &raw) != REDIS_OK {
                let message = Self.errorString(ctx)
                close()
                throw RedisError("Redis protocol error: \(message)")
            }
            guard let raw else { return replies }
            replies.append(Self.copy(raw.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
    }
}
