/// A Lua script run with EVALSHA, loaded again if Redis lost it (restart, SCRIPT FLUSH).
public final class RedisScript: Sendable {
    public let source: String
    public init(source: String) { self.source = source }

    /// Runs the script once per call, pipelined; entries that hit NOSCRIPT are retried after a load.
    public func run(on redis: RedisConnection, sha: inout String?,
                    calls: [(keys: [[UInt8]], args: [[UInt8]])]) throws(RedisError) -> [RedisReply] {
        try send(on: redis, sha: &sha, calls: calls)
        return try receive(on: redis, sha: &sha, calls: calls)
    }

    /// The first half of `run`: sends one EVALSHA per call and returns without a reply.
    public func send(on redis: RedisConnection, sha: inout String?,
                     calls: [(keys: [[UInt8]], args: [[UInt8]])]) throws(RedisError) {
        if sha == nil { sha = try load(on: redis) }
        let command = Array("EVALSHA".utf8), digest = Array(sha!.utf8)
        try redis.send(calls.map { [command, digest, Array(String($0.keys.count).utf8)] + $0.keys + $0.args })
    }

    /// The second half of `run`: the replies to the `calls` sent last, in order, with NOSCRIPT
    /// entries run again after loading the script.
    public func receive(on redis: RedisConnection, sha: inout String?,
                        calls: [(keys: [[UInt8]], args: [[UInt8]])]) throws(RedisError) -> [RedisReply] {
        var replies = try redis.receive(count: calls.count)
        let missing = replies.indices.filter {
            if case let .error(e) = replies[$0], e.hasPrefix("NOSCRIPT") { return true }
            return false
        }
        if !missing.isEmpty {
            sha = try load(on: redis)
            let retried = try redis.pipeline(missing.map { evalsha(sha!, calls[$0].keys, calls[$0].args) })
            for (i, reply) in zip(missing, retried) { replies[i] = reply }
        }
        return replies
    }

    private func load(on redis: RedisConnection) throws(RedisError) -> String {
        let reply = try redis.command(["SCRIPT", "LOAD", source])
        guard let sha = reply.text, case .string = reply else { throw RedisError("SCRIPT LOAD failed: \(reply)") }
        return sha
    }

    private func evalsha(_ sha: String, _ keys: [[UInt8]], _ args: [[UInt8]]) -> [[UInt8]] {
        [Array("EVALSHA".utf8), Array(sha.utf8), Array(String(keys.count).utf8)] + keys + args
    }
}
