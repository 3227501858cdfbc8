import HeraldCore
import HeraldOutbound
import HeraldRuntime
import HeraldWebSocket
import Logging
import Synchronization

/// The subscribe proxy (a namespace's `subscribe-proxy-url`) goes through the same workers:
/// `{"user", "client", "channel", "info"}` POSTed, 200 allows, 401/403 refuses, anything else
/// is `subscribe_proxy_unavailable` to the client.
///
/// The connect proxy (`--connect-proxy-url`): every WebSocket upgrade and SSE request is held by
/// the HTTP front while one of `--connect-proxy-concurrency` threads (`herald-proxy-N`, each with
/// its own keep-alive connection: the pool) POSTs its cookies, chosen headers and query to the
/// application's backend. A 200 `{"user", "channels", "expire_at", "info"}` admits it as that
/// user; 401/403 refuses the upgrade with Herald's JSON error; anything else (down, timeout,
/// another status, a bad answer) refuses it with 503 `connect_proxy_unavailable`, so the client
/// retries with backoff and nothing waits longer than `--connect-proxy-timeout`.
///
/// - Important: thread-safe: requests come from the front thread, answers go from the workers.
final class ConnectProxy: Sendable {
    enum Job: Sendable {
        case connect(Acceptor.Screening)
        case subscribe(url: OutboundURL, body: [UInt8], hub: Int, connection: UInt64, channel: String)
    }

    /// Requests waiting beyond this are refused at once (503): a backend that is slow must not
    /// let held upgrades pile up.
    static let maxWaiting = 1_024

    let url: OutboundURL?
    let hubs: HubInboxes
    let config: HeraldConfig
    let metrics: Metrics
    let logger: Logger
    private let jobs = Mailbox<Job>()
    private let waiting = Atomic<Int>(0)

    /// Each namespace's `subscribe-proxy-url`, parsed once.
    let subscribeURLs: [String: OutboundURL]

    init(url: OutboundURL?, subscribeURLs: [String: OutboundURL], hubs: HubInboxes, config: HeraldConfig, metrics: Metrics, logger: Logger) {
        self.url = url
        self.subscribeURLs = subscribeURLs
        self.hubs = hubs
        self.config = config
        self.metrics = metrics
        self.logger = logger
    }

    /// From the front thread: an upgrade to ask about.
    /// Takes a place in the queue; false when it is full.
    private func reserve() -> Bool {
        if waiting.add(1, ordering: .relaxed).newValue <= Self.maxWaiting { return true }
        waiting.subtract(1, ordering: .relaxed)
        return false
    }

    func screen(_ screening: Acceptor.Screening) {
        guard reserve() else {
            metrics.countConnectProxy(.error)
            return screening.request.respond(status: 503, json: HTTPResponse.errorJSON("connect_proxy_unavailable",
                                                                                        "too many connections wait for the connect proxy; retry"))
        }
        jobs.post(.connect(screening))
    }

    /// One worker: runs until `stop`.
    func run(stop: StopFlag) {
        let client = OutboundHTTPClient(maxBodyBytes: 64 * 1024, maxIdlePerOrigin: 1)
        while !stop.isSet {
            for job in jobs.take(timeoutMillis: 200) {
                // One job each, so the others go to the other workers.
                switch job {
                case let .connect(screening): connect(screening, client)
                case let .subscribe(url, body, hub, connection, channel):
                    hubs.post(to: hub, .subscribeProxyAnswer(connection: connection, channel: channel, allowed: subscribe(url, body, client)))
                }
                waiting.subtract(1, ordering: .relaxed)
            }
        }
    }

    /// From a WebSocket thread: may this connection subscribe? The answer goes back to `hub`.
    func askSubscribe(url text: String, hub: Int, connection: UInt64, channel: String, user: String?, client: String, info: [UInt8]?) {
        guard let url = subscribeURLs[text], reserve() else {
            metrics.subscribeProxy[.error]?.add()
            return hubs.post(to: hub, .subscribeProxyAnswer(connection: connection, channel: channel, allowed: nil))
        }
        let body = ConnectIdentity.subscribeBody(user: user, client: client, channel: channel, info: info)
        jobs.post(.subscribe(url: url, body: body, hub: hub, connection: connection, channel: channel))
    }

    private func subscribe(_ url: OutboundURL, _ body: [UInt8], _ client: OutboundHTTPClient) -> Bool? {
        do {
            let answer = try client.request(url, method: "POST", headers: [("Content-Type", "application/json")], body: body,
                                            timeoutMillis: config.connectProxyTimeoutSeconds * 1000)
            switch answer.status {
            case 200...299:
                metrics.subscribeProxy[.ok]?.add()
                return true
            case 401, 403:
                metrics.subscribeProxy[.refused]?.add()
                return false
            default:
                metrics.subscribeProxy[.error]?.add()
                logger.warning("subscribe proxy unavailable", metadata: ["url": "\(url)", "status": "\(answer.status)"])
                return nil
            }
        } catch {
            metrics.subscribeProxy[.error]?.add()
            logger.warning("subscribe proxy unavailable", metadata: ["url": "\(url)", "why": "\(error)"])
            return nil
        }
    }

    private func connect(_ screening: Acceptor.Screening, _ client: OutboundHTTPClient) {
        guard let url else { return screening.request.respond(status: 503, json: HTTPResponse.errorJSON("connect_proxy_unavailable", "no connect proxy")) }
        let request = screening.request
        let body = ConnectIdentity.requestBody(transport: screening.isStream ? "sse" : "websocket", remoteAddress: request.peer,
                                               path: request.path, query: request.query, headers: request.headers,
                                               forward: config.connectProxyHeaders)
        let answer: HTTPResponseParser.Response
        do throws(OutboundError) {
            answer = try client.request(url, method: "POST", headers: [("Content-Type", "application/json")], body: body,
                                        timeoutMillis: config.connectProxyTimeoutSeconds * 1000)
        } catch {
            return unavailable(request, "the connect proxy did not answer: \(error.description)", kind: error.kind.rawValue)
        }
        switch answer.status {
        case 200:
            switch ConnectIdentity.parse(answer.body, nowSeconds: wallMillis() / 1000) {
            case let .success(identity):
                metrics.countConnectProxy(.ok)
                screening.admit(attachment: ConnectIdentity.attachment(identity))
            case let .failure(error):
                unavailable(request, "the connect proxy's answer cannot be used: \(error.description)", kind: "bad_answer")
            }
        case 401, 403:
            metrics.countConnectProxy(.refused)
            if config.connectProxyRefusal == .close && !screening.isStream {
                return screening.admit(attachment: ConnectIdentity.refusalAttachment(status: answer.status))
            }
            request.respond(status: answer.status, json: HTTPResponse.errorJSON(answer.status == 401 ? "unauthorized" : "forbidden",
                                                                                 ConnectIdentity.refusalReason))
        default:
            unavailable(request, "the connect proxy answered \(answer.status)", kind: "status")
        }
    }

    private func unavailable(_ request: HTTPRequest, _ message: String, kind: String) {
        metrics.countConnectProxy(.error)
        logger.warning("connect proxy unavailable: upgrade refused with 503", metadata: ["url": "\(url.map { "\($0)" } ?? "-")", "why": "\(message)", "kind": "\(kind)"])
        request.respond(status: 503, json: HTTPResponse.errorJSON("connect_proxy_unavailable", message + "; retry"))
    }
}
