import HeraldCore
import HeraldRuntime
import HeraldWebSocket
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Herald's HTTP endpoints on the WebSocket port: health, metrics, publish, history and the
/// static files of the web client. Publish and history answer later, when their worker replies.
///
/// - Important: every method runs on the service thread.
final class HTTPRoutes {
    let config: HeraldConfig
    let metrics: Metrics
    let health: Health
    let verifier: TokenVerifier?
    let reader: HistoryReader
    let publisher: Publisher
    /// This service thread's index: workers answer here.
    let hub: Int
    private var waiting: [UInt64: HTTPRequest] = [:]
    private var nextToken: UInt64 = 1
    private var presenceChannel: [UInt64: String] = [:]

    let registry: NodeRegistry

    init(config: HeraldConfig, metrics: Metrics, health: Health, verifier: TokenVerifier?, reader: HistoryReader, publisher: Publisher,
         registry: NodeRegistry, hub: Int) {
        self.registry = registry
        self.config = config
        self.metrics = metrics
        self.health = health
        self.verifier = verifier
        self.reader = reader
        self.publisher = publisher
        self.hub = hub
    }

    func handle(_ request: HTTPRequest) {
        let path = request.path
        if ["/livez", "/healthz", "/readyz", "/metrics"].contains(path), request.method != "GET" {
            return Self.methodNotAllowed(request, allow: "GET, HEAD")
        }
        switch path {
        case "/livez":
            return Self.livez(request, config: config)
        case "/healthz", "/readyz":
            return Self.readyz(request, config: config, health: health, metrics: metrics)
        case "/metrics" where !config.adminOnlyMetrics:
            return Self.metrics(request, metrics: metrics, health: health)
        case "/metrics":
            return request.respond(status: 404, json: HTTPResponse.errorJSON("not_found", "/metrics is served on the admin listener only (--admin-only-metrics)"))
        case "/ws":
            // A plain request to the WebSocket path: say what it is for, not "no such file".
            return request.respond(status: 426, json: HTTPResponse.errorJSON("upgrade_required", "/ws takes WebSocket upgrades only"),
                                   headers: [("upgrade", "websocket")])
        default:
            break
        }
        let readAPI = path.hasPrefix("/api/history/") || path.hasPrefix("/api/presence/")
        if readAPI, let origin = request.header("origin") {
            // A page from a listed origin may read history and presence from the browser (the
            // same list that admits its WebSocket and SSE connections). Publishing stays a
            // backend's job: its API key does not belong in a page.
            if config.allowedOrigins.contains(origin) {
                request.commonHeaders = [("access-control-allow-origin", origin), ("vary", "Origin"),
                                         ("access-control-expose-headers", "x-herald-epoch, x-herald-seq")]
            }
            if request.method == "OPTIONS" { return Self.preflight(request, origin: origin, allowed: !request.commonHeaders.isEmpty) }
        }
        if path == "/api/channels" || path == "/api/info" {
            guard request.method == "GET" else { return Self.methodNotAllowed(request, allow: "GET, HEAD") }
            return registry.take(request)
        }
        if ["/api/disconnect", "/api/subscribe", "/api/unsubscribe", "/api/broadcast"].contains(path) {
            // POSTs are handed to the control worker and the publisher by the HTTP front.
            return Self.methodNotAllowed(request, allow: "POST")
        }
        if path.hasPrefix("/api/publish/") {
            guard request.method == "POST" else {
                return Self.methodNotAllowed(request, allow: "POST")
            }
            // The HTTP front hands these to the publisher directly; one that came this way goes there too.
            return publisher.take(request)
        }
        if path.hasPrefix("/api/history/") {
            guard request.method == "GET" else {
                return Self.methodNotAllowed(request, allow: "GET, HEAD")
            }
            return history(request, channel: String(path.dropFirst("/api/history/".count)))
        }
        if path.hasPrefix("/api/presence/") {
            guard request.method == "GET" else {
                return Self.methodNotAllowed(request, allow: "GET, HEAD")
            }
            return presence(request, channel: String(path.dropFirst("/api/presence/".count)))
        }
        staticFile(request)
    }

    /// A history read for `token` finished.
    func answerHistory(token: UInt64, result: Result<HistorySnapshot, some Error>, since: UInt64, limit: Int) {
        guard let request = waiting.removeValue(forKey: token) else { return }
        switch result {
        case let .success(snapshot):
            var body: [UInt8] = [UInt8(ascii: "[")]
            var n = 0
            if let oldest = snapshot.oldestSeq {
                for (i, frame) in snapshot.frames.enumerated() where oldest + UInt64(i) > since && n < limit {
                    if n > 0 { body.append(UInt8(ascii: ",")) }
                    body.append(contentsOf: frame)
                    n += 1
                }
            }
            body.append(UInt8(ascii: "]"))
            request.respond(status: 200, contentType: "application/json", body: body,
                            headers: [("x-herald-epoch", snapshot.epoch), ("x-herald-seq", String(snapshot.seq))])
        case .failure:
            request.respond(status: 503, json: HTTPResponse.errorJSON("redis_unavailable", "Redis is unavailable; try again"))
        }
    }

    /// A presence read for `token` finished: `{"channel","members","connections","users"}`.
    func answerPresence(token: UInt64, result: Result<[[UInt8]], some Error>) {
        guard let (request, channel) = waiting.removeValue(forKey: token).map({ ($0, presenceChannel.removeValue(forKey: token) ?? "") }) else { return }
        switch result {
        case let .success(members):
            var users = Set<String>()
            for m in members { if let user = (try? JSON.parse(m))?["user"]?.stringValue { users.insert(user) } }
            var body = Array("{\"channel\":\(JSON.quoted(channel)),\"members\":[".utf8)
            for (i, m) in members.enumerated() {
                if i > 0 { body.append(UInt8(ascii: ",")) }
                body += m
            }
            body += Array("],\"connections\":\(members.count),\"users\":\(users.count)}".utf8)
            request.respond(status: 200, contentType: "application/json", body: body)
        case .failure:
            request.respond(status: 503, json: HTTPResponse.errorJSON("redis_unavailable", "Redis is unavailable; try again"))
        }
    }

    /// Liveness: this process serves requests. Never tied to RabbitMQ or Redis, so an
    /// orchestrator does not restart every node during an outage Herald rides out.
    static func livez(_ request: HTTPRequest, config: HeraldConfig) {
        request.respond(status: 200, json: "{\"status\":\"ok\",\"node\":\(JSON.quoted(config.nodeID))}")
    }

    /// Readiness: 200 while RabbitMQ and Redis are both reachable, else 503 naming what is down.
    /// With `--partitions` above 1, `sequencer` is true while this node holds at least one
    /// partition, and `partitions_held` says how many.
    static func readyz(_ request: HTTPRequest, config: HeraldConfig, health: Health, metrics: Metrics) {
        let amqp = health.amqpUp, redis = health.redisUp
        let ok = amqp && redis
        let held = config.partitions > 1 ? ",\"partitions_held\":\(metrics.partitionsHeld.load(ordering: .relaxed))" : ""
        let body = "{\"status\":\"\(ok ? "ok" : "degraded")\",\"amqp\":\"\(amqp ? "up" : "down")\",\"redis\":\"\(redis ? "up" : "down")\",\"node\":\(JSON.quoted(config.nodeID)),\"sequencer\":\(health.isSequencer)\(held)}"
        request.respond(status: ok ? 200 : 503, json: body)
    }

    static func metrics(_ request: HTTPRequest, metrics: Metrics, health: Health) {
        request.respond(status: 200, contentType: "text/plain; version=0.0.4", body: Array(metrics.render(health: health).utf8))
    }

    /// 405 with the `Allow` header RFC 9110 asks for.
    static func methodNotAllowed(_ request: HTTPRequest, allow: String) {
        request.respond(status: 405, json: HTTPResponse.errorJSON("method_not_allowed", "use \(allow)"), headers: [("allow", allow)])
    }

    /// The CORS preflight of a cross-origin read (a `fetch` with an `Authorization` or
    /// `X-API-Key` header): allowed for the origins of `--allowed-origin`, for `GET` and `HEAD`.
    static func preflight(_ request: HTTPRequest, origin: String, allowed: Bool) {
        guard allowed else {
            return request.respond(status: 403, json: HTTPResponse.errorJSON("origin_not_allowed", WebSocketServer.originRefusal(origin)))
        }
        let asked = request.header("access-control-request-method") ?? ""
        guard ["GET", "HEAD"].contains(asked) else {
            return methodNotAllowed(request, allow: "GET, HEAD")
        }
        // 200 with an empty body rather than 204, which may not carry the Content-Length lws adds.
        request.respond(status: 200, contentType: "text/plain", body: [],
                        headers: [("access-control-allow-methods", "GET, HEAD"),
                                  ("access-control-allow-headers", "authorization, x-api-key"),
                                  ("access-control-max-age", "600")])
    }

    // MARK: Routes

    private func refuse(_ request: HTTPRequest, _ access: HTTPAccess) -> Bool {
        guard case let .refused(status, code, message) = access else { return false }
        metrics.httpAuthRefused.add()
        request.respond(status: status, json: HTTPResponse.errorJSON(code, message))
        return true
    }

    private func history(_ request: HTTPRequest, channel: String) {
        if let problem = ChannelName.problem(channel) {
            return request.respond(status: 400, json: HTTPResponse.errorJSON("bad_channel", problem))
        }
        if refuse(request, HTTPAccess.history(request.credentials, channel: channel, config: config,
                                              verifier: verifier, nowSeconds: wallMillis() / 1000)) { return }
        var since: UInt64 = 0
        let size = config.historySize(of: channel)
        var limit = size
        for (k, v) in request.query {
            if k == "since" {
                guard let s = UInt64(v) else { return request.respond(status: 400, json: HTTPResponse.errorJSON("bad_request", "since must be a non-negative integer")) }
                since = s
            } else if k == "limit" {
                guard let l = Int(v), l >= 0 else { return request.respond(status: 400, json: HTTPResponse.errorJSON("bad_request", "limit must be a non-negative integer")) }
                limit = min(l, size)
            }
        }
        reader.requests.post(.http(channel: channel, token: wait(request), since: since, limit: limit, hub: hub))
    }

    private func presence(_ request: HTTPRequest, channel: String) {
        if let problem = ChannelName.problem(channel) {
            return request.respond(status: 400, json: HTTPResponse.errorJSON("bad_channel", problem))
        }
        if refuse(request, HTTPAccess.history(request.credentials, channel: channel, config: config,
                                              verifier: verifier, nowSeconds: wallMillis() / 1000)) { return }
        guard config.hasPresence(channel) else {
            return request.respond(status: 404, json: HTTPResponse.errorJSON("presence_unavailable", "this channel has no presence (--presence-channels)"))
        }
        let token = wait(request)
        presenceChannel[token] = channel
        reader.requests.post(.httpPresence(channel: channel, token: token, hub: hub))
    }

    /// Parks a request until its worker answers; the token names it in the answer.
    private func wait(_ request: HTTPRequest) -> UInt64 {
        let token = nextToken
        nextToken += 1
        waiting[token] = request
        return token
    }

    private func staticFile(_ request: HTTPRequest) {
        var path = request.path
        if path == "/" { path = "/index.html" }
        let parts = path.split(separator: "/")
        guard !parts.contains(where: { $0 == ".." || $0.hasPrefix(".") }), let file = WebRoot.regularFile(config.webRoot + path) else {
            return request.respond(status: 404, json: HTTPResponse.errorJSON("not_found", "no such file"))
        }
        guard request.method == "GET" else { return Self.methodNotAllowed(request, allow: "GET, HEAD") }
        request.serveFile(path: file, mime: Self.mime(for: path))
    }

    static func mime(for path: String) -> String {
        if path.hasSuffix(".html") { return "text/html; charset=utf-8" }
        if path.hasSuffix(".js") || path.hasSuffix(".mjs") { return "text/javascript; charset=utf-8" }
        if path.hasSuffix(".css") { return "text/css; charset=utf-8" }
        if path.hasSuffix(".png") { return "image/png" }
        if path.hasSuffix(".svg") { return "image/svg+xml" }
        if path.hasSuffix(".json") { return "application/json" }
        return "application/octet-stream"
    }
}

extension HTTPRequest {
    var credentials: HTTPAccess.Credentials {
        HTTPAccess.Credentials(apiKey: header("x-api-key"), authorization: header("authorization"))
    }
}

/// The files the web root serves.
enum WebRoot {
    /// `path` when it names a regular file (not a folder, not missing).
    static func regularFile(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return path
    }
}
