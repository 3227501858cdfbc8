import HeraldRuntime
import HeraldCore
import HeraldRedis
import HeraldWebSocket
import Logging

/// Takes `POST /api/publish/{channel}` straight from the HTTP front (no WebSocket thread on the
/// way), checks it (credentials, channel, size, JSON) and stores it directly in Redis with the
/// `sequence` script (which gives each its seq and publishes it live in the same atomic step),
/// without a trip through RabbitMQ:
/// the requests that arrive together are stored in one call, each channel's in the order they
/// came, and each is answered once Redis has it (and, with `--redis-wait-replicas`, once enough
/// replicas hold it). Several nodes may publish to one channel at once: the script is the arbiter
/// of seqs. An `Idempotency-Key` is the message's id, de-duplicated by the same script.
///
/// - Important: owns Redis connection 4; runs on its own thread (`herald-publish`), which is the
///   only one that touches its state (hence `@unchecked Sendable`).
final class Publisher: Worker, @unchecked Sendable {
    /// A publish that passed its checks.
    struct Request {
        let http: HTTPRequest
        let channel: String
        /// The message id: the `Idempotency-Key`, or one made up by the node.
        let id: String
        /// Whether `id` came from the publisher (then it is de-duplicated).
        let idFromPublisher: Bool
        let contentType: String?
    }

    /// The answer to one publish.
    enum Answer {
        case stored(id: String, channel: String, epoch: String, seq: UInt64, duplicate: Bool)
        case failed(status: Int, code: String, message: String, id: String)
    }

    private let inbox = Mailbox<HTTPRequest>()

    /// A `POST /api/publish/{channel}` to check, store and answer. Any thread.
    func take(_ request: HTTPRequest) { inbox.post(request) }

    private lazy var link = makeRedisLink("Redis (HTTP publisher)")
    private var sha: String?
    /// How long a publish waits for `--redis-wait-replicas` before it is answered 503.
    static let replicaWaitMillis = 1_000 // under the Redis connection's 2 s read timeout

    func run() {
        while !stop.isSet {
            let batch = inbox.take(timeoutMillis: 200).compactMap(checked)
            guard !batch.isEmpty else { continue }
            // Never waits for Redis: requests that come while it is down are answered 503 at once.
            guard let redis = link.get(wait: false) else {
                answer(batch) { .failed(status: 503, code: "redis_unavailable", message: "Redis is unavailable; try again", id: $0.id) }
                continue
            }
            store(batch, on: redis)
        }
        link.close { $0.close() }
    }

    /// The request as a publish, or nil when it was refused (and answered).
    private func checked(_ request: HTTPRequest) -> Request? {
        let channel = String(request.path.dropFirst("/api/publish/".count))
        if case let .refused(status, code, message) = HTTPAccess.publish(request.credentials, channel: channel, config: config) {
            metrics.httpAuthRefused.add()
            request.respond(status: status, json: HTTPResponse.errorJSON(code, message))
            return nil
        }
        if let problem = ChannelName.problem(channel) {
            request.respond(status: 400, json: HTTPResponse.errorJSON("bad_channel", problem))
            return nil
        }
        if request.body.count > config.maxMessageBytes {
            request.respond(status: 413, json: HTTPResponse.errorJSON("too_large", "body is larger than \(config.maxMessageBytes) bytes"))
            return nil
        }
        let contentType = request.header("content-type")
        if let ct = contentType, MessageEnvelope.isJSONContentType(ct) {
            do { _ = try JSON.minify(request.body) } catch {
                request.respond(status: 400, json: HTTPResponse.errorJSON("bad_json", "body is not valid JSON: \(error.message) at byte \(error.offset)"))
                return nil
            }
        }
        let key = request.header("idempotency-key").flatMap { $0.isEmpty ? nil : $0 }
        return Request(http: request, channel: channel, id: key ?? "\(config.nodeID)-\(randomHex(bytes: 8))",
                       idFromPublisher: key != nil, contentType: contentType)
    }

    private func store(_ batch: [Request], on redis: RedisConnection) {
        let now = wallMillis()
        var groups: [StoreGroup] = []
        var members: [[Request]] = [] // parallel to groups
        var index: [String: Int] = [:]
        for r in batch {
            let envelope: MessageEnvelope
            do {
                envelope = try MessageEnvelope(channel: r.channel, id: r.id, timeMillis: now, body: r.http.body, contentType: r.contentType)
            } catch {
                answer([r]) { .failed(status: 400, code: "bad_json", message: "body is not valid JSON: \(error.message)", id: $0.id) }
                continue
            }
            let g = index[r.channel] ?? {
                groups.append(StoreGroup(channel: r.channel))
                members.append([])
                index[r.channel] = groups.count - 1
                return groups.count - 1
            }()
            groups[g].envelopes.append(envelope)
            groups[g].publisherIDs.append(r.idFromPublisher ? r.id : nil)
            members[g].append(r)
        }
        guard !groups.isEmpty else { return }
        let call = Scripts.sequenceCall(groups, marks: watermarks.marks(groups.map(\.channel)), config: config)
        let replies: [RedisReply]
        do {
            let reply = try Scripts.sequence.run(on: redis, sha: &sha, calls: [call])[0]
            replies = Scripts.sequenceReplies(reply, groups: groups.count) ?? Array(repeating: reply, count: groups.count)
        } catch {
            sha = nil
            link.drop(error, "HTTP publishes get 503 until it is back")
            answer(batch) { .failed(status: 503, code: "redis_unavailable", message: "Redis is unavailable; try again", id: $0.id) }
            return
        }
        let replicated = config.redisWaitReplicas == 0 || waitForReplicas(redis)
        var sequenced: [SequencedMessage] = []
        for (g, reply) in replies.enumerated() {
            let group = groups[g]
            guard let answer = Scripts.sequenced(reply, count: group.envelopes.count) else {
                logger.error("sequence script failed for an HTTP publish", metadata: ["channel": "\(group.channel)", "reply": "\(reply)"])
                self.answer(members[g]) { .failed(status: 500, code: "store_failed", message: "Redis refused to store it: \(reply)", id: $0.id) }
                continue
            }
            reportIfBehind(group.channel, answer)
            var duplicates = 0
            for (i, (m, r)) in zip(answer.messages, members[g]).enumerated() {
                if m.stored != nil { duplicates += 1 }
                sequenced.append(SequencedMessage(channel: group.channel, epoch: answer.epoch, seq: m.seq,
                                                  frame: m.stored ?? group.envelopes[i].frame(seq: m.seq)))
                Self.respond(r.http, replicated
                    ? .stored(id: r.id, channel: group.channel, epoch: answer.epoch, seq: m.seq, duplicate: m.stored != nil)
                    : .failed(status: 503, code: "not_replicated",
                              message: "stored, but fewer than --redis-wait-replicas replicas confirmed it within \(Self.replicaWaitMillis) ms; "
                                  + (r.idFromPublisher ? "publish again with Idempotency-Key: \(r.id)" : "send an Idempotency-Key to retry without a second copy"),
                              id: r.id))
            }
            metrics.messagesIn.add(group.envelopes.count - duplicates)
            metrics.duplicates.add(duplicates)
            metrics.httpPublishes.add(group.envelopes.count)
            metrics.channelActivity.add(group.channel, group.envelopes.count - duplicates)
        }
        watermarks.record(sequenced)
    }

    /// With `--redis-wait-replicas N`: true once N replicas hold what was stored (Redis `WAIT`),
    /// false when they do not within `replicaWaitMillis` or the connection fails.
    private func waitForReplicas(_ redis: RedisConnection) -> Bool {
        do {
            let acked = try redis.command(["WAIT", String(config.redisWaitReplicas), String(Self.replicaWaitMillis)]).integer ?? 0
            if acked >= Int64(config.redisWaitReplicas) { return true }
            metrics.redisReplicaWaits.add()
            return false
        } catch {
            sha = nil
            link.drop(error, "HTTP publishes get 503 until it is back")
            return false
        }
    }

    private func answer(_ requests: [Request], _ make: (Request) -> Answer) {
        for r in requests { Self.respond(r.http, make(r)) }
    }

    /// 202 with the message's seq, or the error with the id to publish again with.
    static func respond(_ request: HTTPRequest, _ answer: Answer) {
        switch answer {
        case let .stored(id, channel, epoch, seq, duplicate):
            request.respond(status: 202, json: "{\"id\":\(JSON.quoted(id)),\"channel\":\(JSON.quoted(channel)),\"epoch\":\(JSON.quoted(epoch)),\"seq\":\(seq)\(duplicate ? ",\"duplicate\":true" : "")}")
        case let .failed(status, code, message, id):
            var body = HTTPResponse.errorJSON(code, message)
            body.removeLast()
            request.respond(status: status, json: body + ",\"id\":\(JSON.quoted(id))}")
        }
    }
}
