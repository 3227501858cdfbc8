import HeraldCore
import HeraldRuntime
import HeraldRedis
import Logging

/// Reads channel history for subscribers and for `GET /api/history`. Concurrent requests for one
/// channel share one read. It also pings an idle Redis each second, so `/readyz` notices an
/// outage without traffic, and extends the TTL of subscribed empty channels when the hub asks.
///
/// - Important: owns Redis connection 2; runs on its own thread (`herald-history`), which is the
///   only one that touches its state (hence `@unchecked Sendable`).
final class HistoryReader: Worker, @unchecked Sendable {
    /// `hub`: the service thread that asked, which gets the answer.
    enum Request: Sendable {
        case subscribe(channel: String, request: UInt64, hub: Int)
        case http(channel: String, token: UInt64, since: UInt64, limit: Int, hub: Int)
        /// Subscribed channels that have had no message here: extend their empty-channel TTL.
        case keepEmptyAlive(channels: [String])
        /// `GET /api/presence/{channel}`: the member list.
        case httpPresence(channel: String, token: UInt64, hub: Int)
    }

    let requests = Mailbox<Request>()
    private lazy var link = makeRedisLink("Redis (history reader)",
                                      healthy: { [health] in health.readerRedis.store($0, ordering: .relaxed) })
    /// Replays compressed once for every subscriber of the node that compresses.
    private lazy var pieces = SharedPieces(config: config, metrics: metrics)
    private var sha: String?
    private var keepAliveSHA: String?
    private var presenceSHA: String?

    func run() {
        var waiting: [Request] = []
        var lastHeard = monotonicMicros()
        while !stop.isSet {
            let redis = link.get()
            waiting += requests.take(timeoutMillis: waiting.isEmpty ? 200 : 0)
            guard let redis else { continue } // retry after backoff; requests stay queued
            var keepAlive: [String] = []
            waiting.removeAll { request in
                guard case let .keepEmptyAlive(channels) = request else { return false }
                keepAlive += channels
                return true
            }
            if !keepAlive.isEmpty { extendEmpty(keepAlive, on: redis) }
            if waiting.isEmpty {
                // An idle node still notices Redis going away, so /readyz tells the truth.
                if monotonicMicros() - lastHeard >= 1_000_000 {
                    lastHeard = monotonicMicros()
                    if case let .failure(error) = Result(catching: { () throws(RedisError) in try redis.command(["PING"]) }) {
                        drop(error, "it stopped answering")
                    }
                }
                continue
            }
            lastHeard = monotonicMicros()
            serve(&waiting, on: redis)
        }
        link.close { $0.close() }
    }

    /// Answers the waiting requests with one read per channel; on a Redis error HTTP requests
    /// get 503 and subscribers wait for the next connection.
    private func serve(_ waiting: inout [Request], on redis: RedisConnection) {
        var channels: [String] = []
        // Per channel, the waiting subscribe requests of each service thread.
        var subscribers: [String: [Int: [UInt64]]] = [:]
        for r in waiting {
            switch r {
            case let .subscribe(channel, request, hub):
                if subscribers[channel] == nil { channels.append(channel) }
                subscribers[channel, default: [:]][hub, default: []].append(request)
            case let .http(channel, _, _, _, _):
                if subscribers[channel] == nil { channels.append(channel); subscribers[channel] = [:] }
            case .keepEmptyAlive, .httpPresence:
                break
            }
        }
        do throws(RedisError) {
            // Presence streams are read with their member list.
            let streams = channels.filter { PresenceStream.channel(of: $0) != nil }
            var snapshots = try Scripts.readSnapshots(channels.filter { PresenceStream.channel(of: $0) == nil },
                                                      config: config, on: redis, sha: &sha)
            if !streams.isEmpty {
                for (stream, snapshot) in try Scripts.readPresenceSnapshots(streams, config: config, on: redis, sha: &presenceSHA) {
                    snapshots[stream] = snapshot
                }
            }
            for r in waiting {
                if case let .http(channel, token, since, limit, hub) = r {
                    hubs.post(to: hub, .httpHistory(token: token, result: .success(snapshots[channel]!), since: since, limit: limit))
                }
                if case let .httpPresence(channel, token, hub) = r {
                    let members = try redis.command(bytes: [Array("HVALS".utf8), Array(config.presenceMembersKey(channel).utf8)])
                    guard case let .array(items) = members else { throw RedisError("HVALS: unexpected reply \(members)") }
                    hubs.post(to: hub, .httpPresence(token: token, result: .success(items.compactMap(\.bytes))))
                }
            }
            for channel in channels where !subscribers[channel]!.isEmpty {
                // One compressed copy of the replay for every subscriber that compresses.
                var snapshot = snapshots[channel]!
                pieces.compress(&snapshot)
                for (hub, requests) in subscribers[channel]!.sorted(by: { $0.key < $1.key }) {
                    hubs.post(to: hub, .history(channel: channel, requests: requests, snapshot: snapshot))
                }
            }
            waiting = []
        } catch {
            for r in waiting {
                if case let .http(_, token, since, limit, hub) = r {
                    hubs.post(to: hub, .httpHistory(token: token, result: .failure(error), since: since, limit: limit))
                }
                if case let .httpPresence(_, token, hub) = r { hubs.post(to: hub, .httpPresence(token: token, result: .failure(error))) }
            }
            waiting = waiting.filter { if case .subscribe = $0 { return true } else { return false } }
            drop(error, "subscribers wait until it is back")
        }
    }

    /// One script call per 1,000 channels (per hash slot on a Redis Cluster). A failure is only
    /// logged: the hub asks again well before the TTL runs out, and a connection error shows on
    /// the next read.
    private func extendEmpty(_ channels: [String], on redis: RedisConnection) {
        let ttl = Array(String(config.emptyChannelKeySeconds).utf8)
        let calls = config.keyBatches(channels, size: 1_000).map { batch in
            (keys: batch.map { Array(config.metaKey($0).utf8) }, args: [ttl])
        }
        do {
            _ = try Scripts.keepEmptyAlive.run(on: redis, sha: &keepAliveSHA, calls: calls)
        } catch {
            logger.warning("could not extend the TTL of empty channels; retrying at the next round", metadata: ["error": "\(error)"])
        }
    }

    private func drop(_ error: any Error, _ consequence: String) {
        sha = nil
        keepAliveSHA = nil
        presenceSHA = nil
        link.drop(error, consequence)
    }
}
