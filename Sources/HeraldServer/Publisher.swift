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
    /// A publish that passed its checks; one of the `parts` of `reply`.
    struct Request {
        let reply: Reply
        let part: Int
        let body: [UInt8]
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

    /// Collects the answers of a job's publishes (one, or one per channel of a broadcast) and
    /// hands them over together once each has one. Used on the publisher thread only.
    final class Reply: @unchecked Sendable {
        private var answers: [Answer?]
        private let finish: ([Answer]) -> Void
        init(parts: Int, finish: @escaping ([Answer]) -> Void) {
            answers = Array(repeating: nil, count: parts)
            self.finish = finish
        }
        func record(_ part: Int, _ answer: Answer) {
            guard answers[part] == nil else { return }
            answers[part] = answer
            if answers.allSatisfy({ $0 != nil }) { finish(answers.map { $0! }) }
        }
    }

    enum Job: Sendable {
        /// `POST /api/publish/{channel}`.
        case publish(HTTPRequest)
        /// `POST /api/broadcast`.
        case broadcast(HTTPRequest)
        /// A `broadcast` from `<exchange>.control`: `done` gets each channel's answer.
        case controlBroadcast(channels: [String], data: [UInt8], id: String?, done: @Sendable ([Answer]) -> Void)
    }

    private let inbox = Mailbox<Job>()

    /// A `POST /api/publish/{channel}` to check, store and answer. Any thread.
    func take(_ request: HTTPRequest) { inbox.post(.publish(request)) }
    /// A `POST /api/broadcast`. Any thread.
    func takeBroadcast(_ request: HTTPRequest) { inbox.post(.broadcast(request)) }
    /// A broadcast from the control exchange. Any thread.
    func broadcast(channels: [String], data: [UInt8], id: String?, done: @escaping @Sendable ([Answer]) -> Void) {
        inbox.post(.controlBroadcast(channels: channels, data: data, id: id, done: done))
    }

    private lazy var link = makeRedisLink("Redis (HTTP publisher)")
    private var sha: String?
    /// How long a publish waits for `--redis-wait-replicas` before it is answered 503.
    static let replicaWaitMillis = 1_000 // under the Redis connection's 2 s read timeout

    func run() {
        while !stop.isSet {
            let batch = inbox.take(timeoutMillis: 200).flatMap(checked)
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

    /// A job's publishes; none when it was refused (and answered).
    private func checked(_ job: Job) -> [Request] {
        switch job {
        case let .publish(request): return checkedPublish(request).map { [$0] } ?? []
        case let .broadcast(request): return checkedBroadcast(request)
        case let .controlBroadcast(channels, data, id, done):
            return broadcastParts(channels: channels, data: data, id: id, reply: Reply(parts: channels.count, finish: done))
        }
    }

    /// One publish per channel, with the broadcast's id (de-duplicated per channel) or a new one.
    private func broadcastParts(channels: [String], data: [UInt8], id: String?, reply: Reply) -> [Request] {
        let messageID = id ?? "\(config.nodeID)-\(randomHex(bytes: 8))"
        return channels.enumerated().map { i, channel in
            Request(reply: reply, part: i, body: data, channel: channel, id: messageID, idFromPublisher: id != nil, contentType: "application/json")
        }
    }

    private func checkedBroadcast(_ request: HTTPRequest) -> [Request] {
        if case let .refused(status, code, message) = HTTPAccess.serverAPI(request.credentials, config: config) {
            metrics.httpAuthRefused.add()
            request.respond(status: status, json: HTTPResponse.errorJSON(code, message))
            return []
        }
        guard request.path == "/api/broadcast" else {
            request.respond(status: 404, json: HTTPResponse.errorJSON("not_found", "no such endpoint"))
            return []
        }
        switch ServerCommand.parse(name: "broadcast", body: request.body, nowSeconds: wallMillis() / 1000, revokeSeconds: 0) {
        case let .success(.broadcast(channels, data, id)):
            guard data.count <= config.maxMessageBytes else {
                request.respond(status: 413, json: HTTPResponse.errorJSON("too_large", "data is larger than \(config.maxMessageBytes) bytes"))
                return []
            }
            let reply = Reply(parts: channels.count) { answers in Self.respondBroadcast(request, answers, channels: channels) }
            return broadcastParts(channels: channels, data: data, id: id, reply: reply)
        case let .failure(problem):
            metrics.controlRefused.add()
            request.respond(status: 400, json: HTTPResponse.errorJSON(problem.code, problem.description))
            return []
        default:
            return []
        }
    }

    /// The request as a publish, or nil when it was refused (and answered).
    private func checkedPublish(_ request: HTTPRequest) -> Request? {
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
        let reply = Reply(parts: 1) { Self.respond(request, $0[0]) }
        return Request(reply: reply, part: 0, body: request.body, channel: channel, id: key ?? "\(config.nodeID)-\(randomHex(bytes: 8))",
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
                envelope = try MessageEnvelope(channel: r.channel, id: r.id, timeMillis: now, body: r.body, contentType: r.contentType)
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
        let plan = Scripts.sequencePlan(groups.map(\.channel), config: config)
        if config.redisCluster {
            groups = plan.order.map { groups[$0] }
            members = plan.order.map { members[$0] }
        }
        let calls = Scripts.sequenceCalls(groups, sizes: plan.sizes, marks: watermarks.marks(groups.map(\.channel)), config: config)
        let replies: [RedisReply]
        do {
            replies = Scripts.sequenceReplies(try Scripts.sequence.run(on: redis, sha: &sha, calls: calls), sizes: plan.sizes)
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
                r.reply.record(r.part, replicated
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
            let acked = try redis.waitReplicas(config.redisWaitReplicas, timeoutMillis: Self.replicaWaitMillis)
            if acked >= config.redisWaitReplicas { return true }
            metrics.redisReplicaWaits.add()
            return false
        } catch {
            sha = nil
            link.drop(error, "HTTP publishes get 503 until it is back")
            return false
        }
    }

    private func answer(_ requests: [Request], _ make: (Request) -> Answer) {
        for r in requests { r.reply.record(r.part, make(r)) }
    }

    /// 202 with each channel's seq when every channel stored it, else the first failure's status
    /// with every channel's outcome (publish again with the same id: stored ones are not repeated).
    static func respondBroadcast(_ request: HTTPRequest, _ answers: [Answer], channels: [String]) {
        var results: [String] = []
        var failure: (status: Int, code: String, message: String)?
        var id = ""
        for answer in answers {
            switch answer {
            case let .stored(i, channel, epoch, seq, duplicate):
                id = i
                results.append("{\"channel\":\(JSON.quoted(channel)),\"epoch\":\(JSON.quoted(epoch)),\"seq\":\(seq)\(duplicate ? ",\"duplicate\":true" : "")}")
            case let .failed(status, code, message, i):
                id = i
                failure = failure ?? (status, code, message)
                results.append("{\"channel\":\(JSON.quoted(channels[results.count])),\"error\":\(JSON.quoted(code))}")
            }
        }
        let list = "\"id\":\(JSON.quoted(id)),\"results\":[\(results.joined(separator: ","))]"
        if let failure {
            var body = HTTPResponse.errorJSON(failure.code, failure.message)
            body.removeLast()
            request.respond(status: failure.status, json: body + "," + list + "}")
        } else {
            request.respond(status: 202, json: "{" + list + "}")
        }
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
